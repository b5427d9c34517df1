//! Load generator for `signal-mesh-node` (see the benchmarks issue).
fn main() {}
