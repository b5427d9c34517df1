// Test harness for the browser end-to-end tests: real `signal-mesh-node` processes on 127.0.0.1,
// one headless Debian Chromium per test file (driven by playwright-core), one browser context per
// page, pages loaded over http from the node that serves the fixture site (same origin).
//
// Every wait here is bounded; a helper that times out throws an Error naming what it waited for.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BROWSER_DIR = path.resolve(here, '..');
export const REPO = path.resolve(BROWSER_DIR, '..', '..');
export const TMP = path.join(BROWSER_DIR, '.tmp');
export const PKG_DIR = process.env.SIGNAL_MESH_PKG_DIR ?? path.join(REPO, 'pkg');
export const NODE_BIN =
  process.env.SIGNAL_MESH_NODE_BIN ?? path.join(REPO, 'target', 'debug', 'signal-mesh-node');
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** How long a node may take from spawn to its "listening" line. */
const NODE_START_TIMEOUT_MS = 15_000;
/** How long a node may take to exit after SIGTERM before it is killed. */
const NODE_STOP_TIMEOUT_MS = 5_000;
/** Default bound for a wait inside a page. */
export const WAIT_MS = 10_000;

/** The exact Chromium switches the suite runs with (a fresh copy per launch: launchers mutate arrays). */
export function chromiumArgs(userDataDir) {
  return [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
    // Real host candidates instead of unresolvable `.local` mDNS names between pages on one host.
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    `--user-data-dir=${userDataDir}`,
    // Playwright's transport; with ignoreDefaultArgs it must be given explicitly.
    '--remote-debugging-pipe',
    '--no-startup-window',
  ];
}

// ---------------------------------------------------------------------------------------------------
// Prerequisites and the fixture site

/** Fails with a clear message when the node binary or the npm package is missing. */
export function checkPrerequisites() {
  const problems = [];
  if (!fs.existsSync(NODE_BIN)) {
    problems.push(
      `signal-mesh-node binary not found at ${NODE_BIN} ` +
        '(build it with `cargo build -p signal-mesh-node` or set SIGNAL_MESH_NODE_BIN)',
    );
  }
  if (!fs.existsSync(path.join(PKG_DIR, 'package.json'))) {
    problems.push(`npm package not found at ${PKG_DIR} (build it with scripts/build-pkg.sh)`);
  }
  if (!fs.existsSync(CHROMIUM)) {
    problems.push(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  }
  if (problems.length) throw new Error(problems.join('\n'));
}

/** The package's ES module entry, relative to the package root (e.g. `signal_mesh.js`). */
export function packageEntry(pkgDir = PKG_DIR) {
  const meta = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  const pick = (target) => {
    if (typeof target === 'string') return target;
    if (Array.isArray(target)) {
      for (const t of target) {
        const r = pick(t);
        if (r) return r;
      }
      return undefined;
    }
    if (target && typeof target === 'object') {
      for (const cond of ['browser', 'import', 'module', 'default']) {
        if (cond in target) {
          const r = pick(target[cond]);
          if (r) return r;
        }
      }
    }
    return undefined;
  };
  let entry;
  if (meta.exports !== undefined) {
    const root =
      typeof meta.exports === 'object' && !Array.isArray(meta.exports) && '.' in meta.exports
        ? meta.exports['.']
        : meta.exports;
    entry = pick(root);
  }
  entry ??= meta.module ?? meta.browser ?? meta.main;
  if (typeof entry !== 'string') {
    throw new Error(`cannot find an ES module entry in ${pkgDir}/package.json`);
  }
  return entry.replace(/^\.\//, '');
}

function copyDir(from, to) {
  fs.cpSync(from, to, { recursive: true, dereference: true, filter: (src) => !src.includes('node_modules') });
}

/**
 * Assembles a site for the node to serve: the pages from `from` (default the test fixtures) plus
 * the package under `/pkg/`. In the HTML, `__IMPORT_MAP__` becomes an import map mapping
 * `signal-mesh` to the package entry, `__PKG_ENTRY__` the entry's URL, and an existing
 * `"signal-mesh": "..."` import-map entry is pointed at the entry (as scripts/start.sh does for www/).
 * Returns the directory.
 */
export function assembleSite(name = 'site', from = path.join(BROWSER_DIR, 'fixtures')) {
  const dir = path.join(TMP, `${name}-${process.pid}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  copyDir(from, dir);
  copyDir(PKG_DIR, path.join(dir, 'pkg'));
  const entry = packageEntry();
  const importMap = JSON.stringify({ imports: { 'signal-mesh': `/pkg/${entry}` } });
  for (const file of fs.readdirSync(dir)) {
    if (!file.endsWith('.html')) continue;
    const p = path.join(dir, file);
    const html = fs
      .readFileSync(p, 'utf8')
      .replaceAll('__IMPORT_MAP__', importMap)
      .replaceAll('__PKG_ENTRY__', `/pkg/${entry}`)
      .replace(/"signal-mesh"\s*:\s*"[^"]*"/, `"signal-mesh": "./pkg/${entry}"`);
    fs.writeFileSync(p, html);
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------------
// Nodes

const liveNodes = new Set();
process.on('exit', () => {
  for (const child of liveNodes) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** A port that was free a moment ago (for a "server that is down" URL). */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export class NodeProcess {
  /**
   * @param {object} opts
   * @param {string|null} opts.staticDir directory served at `/` (null: none, the dashboard is there)
   * @param {number} [opts.port] 0 (default) for an ephemeral port
   * @param {string[]} [opts.args] extra flags
   * @param {Record<string,string>} [opts.env] extra environment (e.g. SIGNAL_MESH_* limits)
   * @param {string} [opts.name] for log files
   */
  constructor({ staticDir, port = 0, args = [], env = {}, name = 'node' }) {
    this.staticDir = staticDir;
    this.port = port;
    this.args = args;
    this.env = env;
    this.name = name;
    this.child = null;
    this.starts = 0;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/signal`;
  }

  /** Spawns the node and resolves once it printed its listening line. */
  async start() {
    if (this.child) throw new Error(`${this.name} is already running`);
    fs.mkdirSync(path.join(TMP, 'logs'), { recursive: true });
    this.starts += 1;
    const logPath = path.join(TMP, 'logs', `${this.name}-${process.pid}-${this.starts}.log`);
    const log = fs.createWriteStream(logPath);
    this.logPath = logPath;
    const args = [
      '--listen',
      `127.0.0.1:${this.port}`,
      // staticDir: null serves no site: the node's own dashboard is at `/`.
      ...(this.staticDir ? ['--static-dir', this.staticDir] : []),
      ...this.args,
    ];
    const child = spawn(NODE_BIN, args, {
      env: { RUST_LOG: process.env.RUST_LOG ?? 'info', ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    liveNodes.add(child);
    child.on('exit', () => liveNodes.delete(child));
    child.stderr.pipe(log);
    const listening = new Promise((resolve, reject) => {
      let buf = '';
      let found = false;
      child.stdout.on('data', (chunk) => {
        log.write(chunk);
        if (found) return;
        buf += chunk.toString('utf8');
        const m = buf.match(/^signal-mesh-node listening on 127\.0\.0\.1:(\d+)\s*$/m);
        if (m) {
          found = true;
          resolve(Number(m[1]));
        }
      });
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        if (!found) {
          reject(
            new Error(
              `${this.name} exited (code ${code}, signal ${signal}) before listening; log: ${logPath}\n` +
                readTail(logPath),
            ),
          );
        }
      });
    });
    try {
      const port = await withTimeout(listening, NODE_START_TIMEOUT_MS, `${this.name} listening line`);
      if (this.port !== 0 && port !== this.port) {
        throw new Error(`${this.name} listens on ${port}, asked for ${this.port}`);
      }
      this.port = port;
    } catch (e) {
      await this.stop();
      throw e;
    }
    return this;
  }

  /** Stops the node: SIGTERM, then SIGKILL after a bound. `signal: 'SIGKILL'` simulates a crash. */
  async stop({ signal = 'SIGTERM' } = {}) {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    try {
      await withTimeout(exited, NODE_STOP_TIMEOUT_MS, `${this.name} exit after ${signal}`);
    } catch {
      child.kill('SIGKILL');
      await withTimeout(exited, NODE_STOP_TIMEOUT_MS, `${this.name} exit after SIGKILL`);
    }
  }

  /** Stops and starts again on the same port (retrying briefly while the port is released). */
  async restart({ signal = 'SIGTERM', downMs = 0 } = {}) {
    await this.stop({ signal });
    if (downMs) await sleep(downMs);
    let lastError;
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        return await this.start();
      } catch (e) {
        lastError = e;
        await sleep(300);
      }
    }
    throw lastError;
  }

  get running() {
    return this.child !== null;
  }
}

function readTail(file, bytes = 4000) {
  try {
    const s = fs.readFileSync(file, 'utf8');
    return s.slice(-bytes);
  } catch {
    return '';
  }
}

/** Starts a node serving `staticDir`; the caller stops it (or uses `Suite`). */
export async function startNode(opts) {
  return new NodeProcess(opts).start();
}

/** Resolves when `GET url/health` answers 200, bounded. */
export async function waitHealthy(node, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${node.httpUrl}/health`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(100);
  }
  throw new Error(`${node.name} not healthy within ${timeoutMs} ms (${last})`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------
// Browser

function removeDir(dir) {
  if (!dir) return;
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  } catch {
    /* best effort: a leftover temp profile is harmless */
  }
}

/** Launches one headless Chromium with exactly `chromiumArgs` and a fresh user data dir. */
export function launchBrowser() {
  return launchBrowserWith([]);
}

/**
 * A test file's world: one browser, the nodes it started, pages each in their own context.
 * `await suite.close()` in `after()` tears everything down even after a failure.
 */
export class Suite {
  /** `browserArgs`: Chromium switches beyond `chromiumArgs` (e.g. `FAKE_MEDIA_ARGS`). */
  constructor(name, { browserArgs = [] } = {}) {
    this.name = name;
    this.browserArgs = browserArgs;
    this.browser = null;
    this.nodes = [];
    this.contexts = [];
    this.site = null;
    this.consoles = new Map();
  }

  async setup() {
    checkPrerequisites();
    this.site = assembleSite(`site-${this.name}`);
    this.browser = await launchBrowserWith(this.browserArgs);
    return this;
  }

  /** Starts a node serving the fixture site (or `staticDir`). */
  async node(opts = {}) {
    const node = new NodeProcess({
      staticDir: this.site,
      name: `${this.name}-node${this.nodes.length}`,
      ...opts,
    });
    this.nodes.push(node);
    await node.start();
    return node;
  }

  /**
   * Opens `path` (default the test page) from `origin` in a new browser context (made with
   * `contextOptions`, e.g. `{ ignoreHTTPSErrors: true }`) and waits until the page's test helpers
   * are ready. Returns a `TestPage`.
   */
  async page(origin, pagePath = '/test.html', { waitReady = true, contextOptions = {} } = {}) {
    const context = await this.browser.newContext(contextOptions);
    this.contexts.push(context);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const label = `p${this.contexts.length}`;
    const lines = [];
    this.consoles.set(label, lines);
    page.on('console', (msg) => lines.push(`[${msg.type()}] ${msg.text()}`));
    page.on('pageerror', (err) => lines.push(`[pageerror] ${err.message}`));
    const url = `${typeof origin === 'string' ? origin : origin.httpUrl}${pagePath}`;
    const res = await page.goto(url, { timeout: WAIT_MS });
    if (!res || res.status() !== 200) {
      throw new Error(`GET ${url} answered ${res ? res.status() : 'nothing'}`);
    }
    const tp = new TestPage(page, label, lines);
    if (waitReady) await tp.ready();
    return tp;
  }

  /** Wraps a test body so a failure also prints the pages' console output. */
  wrap(fn) {
    return async (t) => {
      try {
        return await fn(t);
      } catch (e) {
        this.dumpConsoles(t);
        throw e;
      }
    };
  }

  /** Prints the pages' console output (for diagnosing a failure). */
  dumpConsoles(t) {
    for (const [label, lines] of this.consoles) {
      if (!lines.length) continue;
      const text = `${label} console:\n  ${lines.slice(-40).join('\n  ')}`;
      if (t) t.diagnostic(text);
      else console.log(text);
    }
  }

  async closePages() {
    const contexts = this.contexts;
    this.contexts = [];
    this.consoles = new Map();
    await Promise.allSettled(contexts.map((c) => withTimeout(c.close(), 5000, 'context close')));
  }

  async close() {
    await this.closePages().catch(() => {});
    if (this.browser) {
      const dir = this.browser.signalMeshUserDataDir;
      await withTimeout(this.browser.close(), 10_000, 'browser close').catch(() => {});
      this.browser = null;
      removeDir(dir);
    }
    await Promise.allSettled(this.nodes.map((n) => n.stop()));
    this.nodes = [];
  }
}

/**
 * Registers a test file's hooks for `suite` (a `Suite` or the name of a new one) and returns
 * `{ suite, node, nodes }`:
 * - `before` (bounded by `timeout`) runs `prepare()` if given, `suite.setup()`, then starts the
 *   file's nodes: a mesh of `mesh` nodes with `startMesh(suite, mesh, meshArgs)` into `nodes`, or
 *   else one node with `suite.node(node)` into `node` (`node` may be a function giving the options
 *   when the hook runs; `false` starts none);
 * - `afterEach` closes the test's pages (unless `closePages` is false);
 * - `after` tears everything down.
 * `node` and `nodes` are read in the tests, once `before` has run.
 */
export function useSuite(
  suite,
  { node = {}, mesh = 0, meshArgs = [], prepare, closePages = true, timeout = 60_000 } = {},
) {
  const env = { suite: typeof suite === 'string' ? new Suite(suite) : suite, node: null, nodes: [] };
  before(async () => {
    if (prepare) await prepare();
    await env.suite.setup();
    if (mesh) env.nodes = await startMesh(env.suite, mesh, meshArgs);
    else if (node) env.node = await env.suite.node(typeof node === 'function' ? node() : node);
  }, { timeout });
  if (closePages) afterEach(() => env.suite.closePages());
  after(() => env.suite.close());
  return env;
}

/**
 * A page running fixtures/test.js: every call goes to `window.T` (see that file) and returns plain
 * data; a rejected call comes back as `{ ok: false, error: { name, code, message, ... } }` through
 * `try*` helpers or throws through `call`.
 */
export class TestPage {
  constructor(page, label, consoleLines) {
    this.page = page;
    this.label = label;
    this.consoleLines = consoleLines;
  }

  async ready(timeoutMs = WAIT_MS) {
    try {
      await this.page.waitForFunction(() => window.T && (window.T.loaded || window.T.loadError), null, {
        timeout: timeoutMs,
      });
    } catch (e) {
      throw new Error(
        `${this.label}: test page did not load within ${timeoutMs} ms; console:\n${this.consoleLines.join('\n')}`,
      );
    }
    const loadError = await this.page.evaluate(() => window.T.loadError);
    if (loadError) throw new Error(`${this.label}: importing signal-mesh failed: ${loadError}`);
  }

  /** Calls `T[method](...args)` in the page; returns `{ ok, value }` or `{ ok: false, error }`. */
  async try(method, ...args) {
    return this.page.evaluate(([m, a]) => window.T.run(m, a), [method, args]);
  }

  /** Calls `T[method](...args)` and returns its value, throwing a descriptive Error on rejection. */
  async call(method, ...args) {
    const r = await this.try(method, ...args);
    if (!r.ok) {
      const e = new Error(`${this.label}: ${method}(${JSON.stringify(args).slice(0, 200)}) failed: ` +
        `${r.error.name} ${r.error.code ?? ''} ${r.error.message}`);
      e.remote = r.error;
      throw e;
    }
    return r.value;
  }

  /** Waits (bounded) until `predicate(T, arg)` is truthy in the page; returns its value. */
  async waitFor(predicate, arg, { timeout = WAIT_MS, what = 'condition' } = {}) {
    try {
      const handle = await this.page.waitForFunction(
        ([src, a]) => {
          // eslint-disable-next-line no-new-func
          const fn = new Function('T', 'arg', `return (${src})(T, arg);`);
          return fn(window.T, a);
        },
        [predicate.toString(), arg],
        { timeout, polling: 50 },
      );
      return await handle.jsonValue();
    } catch (e) {
      if (/Timeout/i.test(e.message)) {
        const snapshot = await this.page.evaluate(() => window.T.snapshot()).catch(() => null);
        throw new Error(
          `${this.label}: timed out after ${timeout} ms waiting for ${what}; state: ${JSON.stringify(snapshot)}`,
        );
      }
      throw e;
    }
  }

  /** Evaluates a function with `T` in the page. */
  async eval(fn, arg) {
    return this.page.evaluate(
      ([src, a]) => {
        // eslint-disable-next-line no-new-func
        const f = new Function('T', 'arg', `return (${src})(T, arg);`);
        return f(window.T, a);
      },
      [fn.toString(), arg],
    );
  }
}

/**
 * Starts a mesh of `n` node processes with `suite`: node 1 on a fixed libp2p port with a key
 * file (so its id is known before it starts: the last word of `signal-mesh-node id`'s line),
 * nodes 2.. bootstrapped from it. `common` flags go to every node. Each node gets
 * `--public-url` (its own edge URL) for failover.
 */
export async function startMesh(suite, n, common = []) {
  const dir = path.join(TMP, `mesh-keys-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const key1 = path.join(dir, `${suite.name}-node1.key`);
  fs.rmSync(key1, { force: true });
  const line = execFileSync(NODE_BIN, ['id', '--key-file', key1], { encoding: 'utf8' }).trim();
  const id1 = line.split(/\s+/).pop();
  if (!/^12D3KooW/.test(id1)) throw new Error(`node id line: ${line}`);
  const p2p = await freePort();
  const boot = `/ip4/127.0.0.1/tcp/${p2p}/p2p/${id1}`;
  const out = [];
  for (let i = 1; i <= n; i++) {
    const port = await freePort();
    const args = [...common, '--public-url', `ws://127.0.0.1:${port}/signal`];
    if (i === 1) args.push('--key-file', key1, '--p2p-listen', `/ip4/127.0.0.1/tcp/${p2p}`);
    else args.push('--bootstrap', boot);
    out.push(await suite.node({ name: `${suite.name}-mesh-node${i}`, port, args }));
  }
  return out;
}

/** Median and 90th percentile (nearest rank) of a list of numbers. */
export function stats(values) {
  const s = [...values].sort((a, b) => a - b);
  const rank = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
  const median = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { n: s.length, min: s[0], median, p90: rank(90), max: s[s.length - 1] };
}

/**
 * Times `connect()` (page clock) from the client in page `a` to a fresh client on page `b` per
 * trial, created with `servers: [server]` and named `b1`, `b2`, ...: one warm-up trial (the first
 * RTCPeerConnection in the process), then `trials` measured ones. `beforeConnect(info, name)` (the
 * new client's `create` answer and name) runs before each connect and is not timed (e.g. a join and
 * a lookup until `a` finds the client). Every trial must hand out an open channel that carries a
 * message. Returns the measured times (ms).
 */
export async function connectTrials(a, b, server, trials, beforeConnect = async () => {}) {
  const times = [];
  for (let i = -1; i < trials; i++) {
    const name = `b${i + 1}`;
    const info = await b.call('create', { servers: [server] }, name);
    await beforeConnect(info, name);
    const conn = await a.call('connect', info.peerId);
    assert.equal(conn.stateAtHandout, 'open');
    await a.call('send', conn.id, `trial ${i}`);
    await b.waitFor((T, x) => T.received(x.peer, x.text, x.name), { peer: a.peerId, text: `trial ${i}`, name }, {
      what: `trial ${i} message`,
    });
    if (i >= 0) times.push(conn.ms);
    await a.call('closeConn', conn.id);
    await b.call('close', name);
  }
  return times;
}

/**
 * Prints `stats(times)` as `<what> over <n> trials (ms): median .., p90 .., min .., max ..` (to the
 * test's diagnostics and stdout) and writes them, with every trial and the Chromium version, to
 * `.tmp/<file>`. Returns the stats.
 */
export function reportTrials(t, suite, what, times, file) {
  const s = stats(times);
  const line = `${what} over ${s.n} trials (ms): median ${s.median.toFixed(1)}, ` +
    `p90 ${s.p90.toFixed(1)}, min ${s.min.toFixed(1)}, max ${s.max.toFixed(1)}`;
  t.diagnostic(line);
  console.log(line);
  fs.mkdirSync(TMP, { recursive: true });
  fs.writeFileSync(
    path.join(TMP, file),
    JSON.stringify({ ...s, trials: times, chromium: suite.browser.version(), at: new Date().toISOString() }, null, 2),
  );
  return s;
}

export { withTimeout };

// ---------------------------------------------------------------------------------------------------
// Steps shared by the tests

/** Error codes the issue allows for bad input from the app. */
export const BAD_INPUT_CODES = ['INVALID_ARGUMENT', 'BAD_REQUEST'];

/** A fresh topic name for one test, so tests never see each other's peers. */
export function uniqueTopic(prefix = 'topic') {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** SHA-256 of a topic name's UTF-8 bytes as lowercase hex (what `TopicId::from_name` does). */
export async function topicHex(name) {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(name, 'utf8').digest('hex');
}

/** Opens a page on `node` and creates an online client in it; returns `{ page, peerId }`. */
export async function onlineClient(suite, node, options = {}, { name = 'c' } = {}) {
  const page = await suite.page(node);
  const info = await page.call('create', { servers: [node.wsUrl], ...options }, name);
  if (info.state !== 'online') throw new Error(`${page.label}: state after create() is ${info.state}`);
  page.peerId = info.peerId;
  return page;
}

/** Waits until `page`'s lookup of `topic` contains every peer in `peerIds` (polling, bounded). */
export async function waitLookup(page, topic, peerIds, { timeout = WAIT_MS, name = 'c' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    const r = await page.try('lookup', topic, undefined, name);
    if (r.ok) {
      last = r.value.peers;
      if (peerIds.every((p) => last.includes(p))) return last;
    } else {
      last = r.error;
    }
    await sleep(100);
  }
  throw new Error(
    `${page.label}: lookup(${JSON.stringify(topic)}) did not contain ${peerIds.join(',')} within ${timeout} ms; last: ${JSON.stringify(last)}`,
  );
}

/** Sends `text` from `from` to `to` over their newest connection and waits until it arrives. */
export async function exchange(from, to, text, { timeout = WAIT_MS } = {}) {
  await from.call('sendTo', to.peerId, text);
  await to.waitFor((T, a) => T.received(a.peer, a.text), { peer: from.peerId, text }, {
    timeout,
    what: `message ${JSON.stringify(text)} from ${from.label}`,
  });
}

// ---------------------------------------------------------------------------------------------------
// Extra browser switches (added for the media tests)

/** Chromium switches for a fake camera and microphone that need no permission prompt. */
export const FAKE_MEDIA_ARGS = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'];

/** Launches one headless Chromium with `chromiumArgs` plus `extra` and a fresh user data dir. */
export async function launchBrowserWith(extra) {
  fs.mkdirSync(TMP, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'signal-mesh-chromium-'));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    ignoreDefaultArgs: true,
    args: [...chromiumArgs(userDataDir), ...extra],
    timeout: 30_000,
  });
  browser.signalMeshUserDataDir = userDataDir;
  return browser;
}
