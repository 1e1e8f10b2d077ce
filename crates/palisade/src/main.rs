//! The `palisade` binary: parses arguments and wires the crates together.

mod cmd;
mod context;

fn main() {}
