//! medic.yaml: the YAML of the settings file, parsed and validated into `Settings`. No input may
//! panic; an error is an error value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_medic::config::Settings;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Settings::from_yaml(Path::new("/etc/nginx-medic/medic.yaml"), text) {
        let _ = e.to_string();
    }
});
