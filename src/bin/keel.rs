//! The `keel` command line (filled in as the CLI grows).

fn main() {}
