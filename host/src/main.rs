//! The `streamtap` binary; everything lives in the library (see `cli`).

fn main() -> anyhow::Result<()> {
    streamtap::cli::main()
}
