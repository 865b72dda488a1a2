//! `blog`: serve the reference application, migrate its database, or seed it with demo data.
//! See `blog --help`.

use std::time::Duration;

use clap::Parser;

use blog::{Cli, Command};

/// jemalloc rather than glibc's malloc, whose slow free path costs a message's few
/// short-lived allocations about twice the instructions, or mimalloc, which keeps what an idle
/// process freed. Its background threads give freed memory back on a timer (built so by
/// .cargo/config.toml; docs/PERFORMANCE.md, "jemalloc gives back what sleeping connections
/// free").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The runtime of `wsgate::runtime`: its workers linger before they sleep when clients
    // keep several messages in flight (`--linger-us`, `--linger-max-us`).
    let linger = wsgate::runtime::Linger::between(
        Duration::from_micros(cli.config.linger_us),
        Duration::from_micros(cli.config.linger_max_us),
    );
    wsgate::runtime::with_linger(linger).build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    blog::config::init_logging();
    match cli.subcommand() {
        Command::Serve => blog::serve(cli.config).await,
        Command::Migrate => blog::migrate(&cli.config).await,
        Command::Seed => seed(&cli.config).await,
        Command::Types => {
            print!("{}", blog::asyncapi::typescript(&blog::description().await?));
            Ok(())
        }
        Command::Asyncapi => {
            let document = blog::asyncapi::document(&blog::description().await?, "localhost:3000");
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(())
        }
    }
}

async fn seed(config: &blog::Config) -> anyhow::Result<()> {
    let state = blog::open(config).await?;
    let seeded = blog::seed::run(&state.store).await?;
    if seeded.users == 0 {
        println!("The demo users exist already; nothing added.");
    } else {
        println!(
            "Added {} users, {} entries and {} comments.",
            seeded.users, seeded.entries, seeded.comments
        );
    }
    for ((email, first_name, _), created) in blog::seed::USERS.iter().zip(seeded.created) {
        if created {
            println!("  {first_name}: {email} / {}", blog::seed::PASSWORD);
        } else {
            println!("  {first_name}: {email} existed already: its password is unchanged");
        }
    }
    Ok(())
}
