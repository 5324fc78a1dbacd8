//! "Did you mean" suggestions by edit distance.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut previous = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let cost = if ca == *cb { diagonal } else { diagonal + 1 };
            let value = cost.min(previous + 1).min(above.saturating_add(1));
            diagonal = above;
            if let Some(slot) = row.get_mut(j + 1) {
                *slot = value;
            }
            previous = value;
        }
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
    }
    row.last().copied().unwrap_or_default()
}

/// `did you mean `x`?` or, failing that, the list of what is accepted.
pub(crate) fn help(word: &str, candidates: &[&str]) -> Option<String> {
    if let Some(best) = closest(word, candidates.iter().copied()) {
        return Some(format!("did you mean `{best}`?"));
    }
    match candidates {
        [] => None,
        [one] => Some(format!("expected `{one}`")),
        many => Some(format!("expected one of {}", quoted(many))),
    }
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("systemdd", "systemd"), 1);
        assert_eq!(distance("restrat", "restart"), 2);
    }

    #[test]
    fn suggests_only_close_words() {
        let kinds = ["systemd", "set_bind_host", "render_site", "probe"];
        assert_eq!(closest("systemdd", kinds), Some("systemd"));
        assert_eq!(closest("prob", kinds), Some("probe"));
        assert_eq!(closest("reboot", kinds), None);
        assert_eq!(
            help("reboot", &kinds),
            Some("expected one of `systemd`, `set_bind_host`, `render_site`, `probe`".to_string())
        );
        assert_eq!(
            help("systemctl", &kinds),
            Some("did you mean `systemd`?".to_string())
        );
    }
}
