#!/usr/bin/env python3
"""Plots a soak run: node RSS and open descriptors over time, from signal-mesh-bench's JSON.

    scripts/plot-soak.py crates/bench/results/bench-soak.json docs/soak.png

A third panel shows the live heap when every sample has `heap_kib` (a run under heaptrack).
Writes an SVG next to the PNG and converts it with `rsvg-convert` (Debian librsvg2-bin) (no Python packages
needed)."""
import json
import subprocess
import sys

W, H, PAD = 900, 300, 60


def panel(series, key, scale, label, top, color, warmup):
    xs = [p["secs"] / 60 for p in series]
    ys = [p[key] * scale for p in series]
    x_max = max(xs) or 1
    y_max = max(ys) * 1.15 or 1
    px = lambda x: PAD + (W - 2 * PAD) * x / x_max
    py = lambda y: top + H - PAD - (H - 2 * PAD) * y / y_max
    out = [f'<text x="{PAD}" y="{top + 30}" font-size="16" font-family="sans-serif">{label}</text>']
    out.append(f'<line x1="{PAD}" y1="{py(0)}" x2="{W - PAD}" y2="{py(0)}" stroke="black"/>')
    out.append(f'<line x1="{PAD}" y1="{py(0)}" x2="{PAD}" y2="{py(y_max)}" stroke="black"/>')
    for i in range(5):
        y = y_max * i / 4
        out.append(f'<text x="{PAD - 8}" y="{py(y) + 4}" font-size="11" text-anchor="end" font-family="sans-serif">{y:.0f}</text>')
        x = x_max * i / 4
        out.append(f'<text x="{px(x)}" y="{py(0) + 16}" font-size="11" text-anchor="middle" font-family="sans-serif">{x:.0f} min</text>')
    if warmup:
        out.append(f'<line x1="{px(warmup / 60)}" y1="{py(0)}" x2="{px(warmup / 60)}" y2="{py(y_max)}" stroke="#999" stroke-dasharray="4"/>')
    pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    return out


def main():
    src, png = sys.argv[1], sys.argv[2]
    doc = json.load(open(src))
    scen = next(s for s in doc["scenarios"] if "series" in s.get("data", s))
    data = scen.get("data", scen)
    series, warmup = data["series"], data.get("warmup_secs", 0)
    body = panel(series, "rss_kib", 1 / 1024, "node RSS (MiB)", 0, "#c0392b", warmup)
    body += panel(series, "fds", 1, "node open file descriptors", H, "#2471a3", warmup)
    panels = 2
    # A run under heaptrack also has the live heap (massif snapshots) per sample.
    if all("heap_kib" in p for p in series):
        body += panel(series, "heap_kib", 1 / 1024, "live heap, heaptrack (MiB)", 2 * H, "#1e8449", warmup)
        panels = 3
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{panels * H}"><rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>'
    svg_path = png.rsplit(".", 1)[0] + ".svg"
    open(svg_path, "w").write(svg)
    subprocess.run(["rsvg-convert", "-o", png, svg_path], check=True)
    print(f"wrote {svg_path} and {png}")


if __name__ == "__main__":
    main()
