//! Errors carried as text (step details, log fields, hook documents): the whole chain, so the
//! OS reason (`read-only file system`, `permission denied`) is never lost on the way.

/// `outer: inner: innermost`. Each error's own message names what failed; its `source` says
/// why, and is printed once, here.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write `/etc/default/api`")]
    struct Write {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn keeps_the_os_reason() {
        let e = Write {
            source: std::io::Error::from_raw_os_error(30),
        };
        assert_eq!(
            chain(&e),
            "cannot write `/etc/default/api`: Read-only file system (os error 30)"
        );
    }
}
