//! `palisade shim` without the rest of palisade, for this crate's own tests.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match args.first().map(String::as_str) {
        Some("shim") => &args[1..],
        _ => &args[..],
    };
    std::process::exit(palisade_sandbox::shim::run_args(args, "palisade shim"))
}
