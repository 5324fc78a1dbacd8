//! Playbook YAML: one playbook file through the whole `playbooks check` path (parse straight from
//! the text, schema, semantic checks, the shipped `render_site` templates rendered against the
//! sample facts). No input may panic, and every error must carry a reason.
//!
//! The loader reads directories, so the input is written to one file of a private temporary
//! directory (`fuzz/run` points `TMPDIR` at a directory of `fuzz/target/` that it removes afterwards).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The shipped templates, so `render_site` actions reach the template checks.
const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../templates");

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("nginx-medic-fuzz-playbook.{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create `{}`: {e}", dir.display());
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    if std::str::from_utf8(data).is_err() {
        return; // the loader reads text; a read error is not the parser's
    }
    let file = dir().join("fuzz.yaml");
    if let Err(e) = std::fs::write(&file, data) {
        panic!("cannot write `{}`: {e}", file.display());
    }
    for error in nginx_medic::playbook::check(&[dir()], &[TEMPLATES]) {
        assert!(
            !error.reason.is_empty(),
            "an error without a reason: {error:?}"
        );
        let _ = error.to_string();
    }
});
