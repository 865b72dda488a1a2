//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the files at compile time but
//! cargo only tracks the ones that existed at the last build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
