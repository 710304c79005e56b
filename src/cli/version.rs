//! `litestream version`.

use anyhow::Result;
use argh::FromArgs;

#[derive(FromArgs)]
/// Prints the version.
#[argh(subcommand, name = "version")]
pub struct Args {
    /// also print the Litestream version this build is compatible with and the OS/arch
    #[argh(switch)]
    verbose: bool,
}

/// Prints the version (and with `-verbose`, how this binary was built).
pub fn run(args: Args) -> Result<i32> {
    if args.verbose {
        println!("Version:     {}", crate::VERSION);
        println!("Compatible:  Litestream 0.5.17 (LTX v0.5.2 replicas, IPC socket, events)");
        println!(
            "OS/Arch:     {}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
    } else {
        println!("{}", crate::VERSION);
    }
    Ok(0)
}
