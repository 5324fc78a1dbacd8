//! nginx configuration: the lexer, the parser and `include` expansion over files in memory, then
//! the facts drawn from the tree. The input is split at NUL bytes into the main file
//! (`/etc/nginx/nginx.conf`) and the files of `conf.d/` it may include, so includes, globs and
//! cycles are reached. No input may panic; every directive's span must name its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_medic::nginx_conf::{self, Directive, MemFs};
use std::path::Path;

/// More files add nothing the fuzzer cannot reach with these.
const MAX_FILES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let text = nginx_conf::text_of_bytes(data.to_vec());
    let mut fs = MemFs::new();
    let main = Path::new("/etc/nginx/nginx.conf");
    for (i, part) in text.splitn(MAX_FILES, '\0').enumerate() {
        if i == 0 {
            fs.insert(main, part);
        } else {
            fs.insert(format!("/etc/nginx/conf.d/{i}.conf"), part);
        }
    }
    // one file alone, as `nginx -t` output is parsed
    if let Ok(directives) = nginx_conf::parse(main, &text, 0) {
        check_spans(&text, &directives);
    }
    let Ok(config) = nginx_conf::load(main, &fs) else {
        return;
    };
    check_tree(&config, &config.directives);
    let _ = nginx_medic::facts::nginx::extract(&config, Path::new("/etc/nginx"));
});

/// The same over the logical tree, each directive against the file it came from.
fn check_tree(config: &nginx_conf::Config, directives: &[Directive]) {
    for d in directives {
        let text = config.file_of(d).map(|f| f.text.as_str());
        assert!(
            text.is_some(),
            "`{}` names file {} of {}",
            d.name,
            d.file,
            config.files.len()
        );
        assert!(
            config.text_of(d).is_some(),
            "span {:?} of `{}`",
            d.span,
            d.name
        );
        check_tree(config, d.children());
    }
}

/// Every span lies on character boundaries of its file and can be rewritten by `replace_span`.
fn check_spans(text: &str, directives: &[Directive]) {
    for d in directives {
        assert!(
            nginx_conf::replace_span(text, d.span, "x").is_some(),
            "span {:?} of `{}`",
            d.span,
            d.name
        );
        for arg in &d.args {
            assert!(
                arg.raw(text).is_some(),
                "span {:?} of an argument of `{}`",
                arg.span,
                d.name
            );
        }
        check_spans(text, d.children());
    }
}
