//! Rebuilds the collector when a migration is added: `sqlx::migrate!`
//! embeds each file, and cargo does not notice a new file by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
