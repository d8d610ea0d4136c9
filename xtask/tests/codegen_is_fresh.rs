//! Fails when the committed generated code in `proto/src/generated/` differs
//! from what the `.proto` files produce today.

use std::fs;

#[test]
fn committed_generated_code_matches_the_protos() {
    let root = xtask::workspace_root();
    let fresh = tempfile::tempdir().expect("temp dir");
    xtask::codegen::generate(&root, fresh.path()).expect("codegen runs");
    let committed = xtask::codegen::committed_dir(&root);
    for entry in fs::read_dir(fresh.path()).expect("read fresh dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let want = fs::read(entry.path()).expect("read fresh file");
        let have = fs::read(committed.join(&name)).unwrap_or_default();
        assert!(
            want == have,
            "proto/src/generated/{} is stale: run `cargo xtask codegen` and commit the result",
            name.to_string_lossy()
        );
    }
}
