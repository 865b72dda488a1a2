//! `blog`: serve the reference application, or migrate its database. See `blog --help`.

use clap::Parser;

use blog::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    blog::config::init_logging();
    match cli.subcommand() {
        Command::Serve => blog::serve(cli.config).await,
        Command::Migrate => blog::migrate(&cli.config).await,
    }
}
