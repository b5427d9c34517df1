#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The checked-in prost code must match the `.proto` files. Regenerate with
//! `SIGNAL_MESH_REGENERATE=1 cargo test -p signal-mesh-proto --test generated`.

use std::path::PathBuf;

/// Every `.proto` file and the generated file it produces.
const PROTOS: &[(&str, &str)] = &[
    ("signal_mesh/edge/v1/edge.proto", "signal_mesh.edge.v1.rs"),
    ("signal_mesh/peer/v1/peer.proto", "signal_mesh.peer.v1.rs"),
    ("signal_mesh/mesh/v1/mesh.proto", "signal_mesh.mesh.v1.rs"),
];

#[test]
fn generated_code_matches_the_proto_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(PROTOS.iter().map(|(p, _)| *p), [root.join("proto")])
        .expect("the .proto files compile");
    let out = tempdir();
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(&out)
        .compile_fds(fds)
        .expect("prost-build generates code");
    for (_, name) in PROTOS {
        let fresh = std::fs::read_to_string(out.join(name)).expect("generated file exists");
        let checked_in_path = root.join("src/generated").join(name);
        if std::env::var_os("SIGNAL_MESH_REGENERATE").is_some() {
            std::fs::write(&checked_in_path, &fresh).expect("write generated code");
            continue;
        }
        let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "{} is stale: run SIGNAL_MESH_REGENERATE=1 cargo test -p signal-mesh-proto --test generated",
            checked_in_path.display()
        );
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signal-mesh-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
