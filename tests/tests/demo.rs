//! The README's first command, `cargo xtask demo`, in its non-interactive
//! mode: it must enroll this machine and print it with the CLI.

use deskpulse_tests::{bin, run};

#[test]
fn the_demo_enrolls_this_machine_and_shows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run(std::process::Command::new(bin("xtask"))
        .args(["demo", "--no-wait", "--skip-build", "--dir"])
        .arg(dir.path().join("demo")))
    .expect_code(0);
    assert!(out.stdout.contains("enrolled as host"), "{}", out.stdout);
    assert!(out.stdout.contains("all acknowledged"), "{}", out.stdout);
    assert!(
        out.stdout.contains("$ deskpulse hosts\nHOSTNAME"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("packages"),
        "host show prints the inventory: {}",
        out.stdout
    );
    assert!(out.stdout.contains("demo finished"), "{}", out.stdout);
}
