//! Splits nginx configuration text into statements, following the rules of nginx's own
//! `ngx_conf_read_token`: where words end, how quotes, `\` escapes, `${var}` and `#` comments work.

use compact_str::CompactString;

/// One word with its byte range (quotes included) and its unescaped value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub start: usize,
    pub end: usize,
    pub value: CompactString,
}

/// What ended a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `;` at this offset.
    Semicolon(usize),
    /// `{` at this offset.
    BlockStart(usize),
    /// `}` at this offset (the statement then has no words).
    BlockEnd(usize),
    /// End of the text, with no words pending.
    Eof,
}

/// The words of one directive and what ended them.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub words: Vec<Word>,
    pub end: Stop,
}

/// A lexical error at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LexError {
    /// A character that cannot stand here (`;`, `{` or `}` out of place, or a character glued to
    /// a closing quote).
    Unexpected { at: usize, ch: char },
    /// The text ends inside a quoted string that opened at `opened`.
    UnterminatedQuote { opened: usize },
    /// The text ends inside a directive that started at `started`.
    UnexpectedEof { started: usize },
}

/// A cursor over the text of one file.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn is_space(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\r' | b'\n')
}

/// The bytes that only continue an unquoted word: all but the blanks, `;`, `{`, `\\` and `$`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < table.len() {
        table[i] = !matches!(
            i as u8,
            b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'\\' | b'$'
        );
        i += 1;
    }
    table
};

fn is_plain(ch: u8) -> bool {
    PLAIN.get(usize::from(ch)).copied().unwrap_or(false)
}

/// How many bytes from `from` on satisfy `class`.
fn skip_while(bytes: &[u8], from: usize, class: fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .position(|&b| !class(b))
        .unwrap_or(bytes.len().saturating_sub(from))
}

/// nginx's unescaping: `\"`, `\'`, `\\` drop the backslash, `\t` `\r` `\n` become control
/// characters, any other backslash stays. A word without a backslash (nearly all) is copied as
/// it is.
fn unescape(raw: &str) -> CompactString {
    let bytes = raw.as_bytes();
    if !bytes.contains(&b'\\') {
        return CompactString::new(raw);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            match bytes.get(i + 1) {
                Some(&c @ (b'"' | b'\'' | b'\\')) => {
                    out.push(c);
                    i += 2;
                    continue;
                }
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b);
        i += 1;
    }
    // only ASCII bytes were dropped or replaced, so the text stays UTF-8
    match String::from_utf8(out) {
        Ok(text) => CompactString::from(text),
        Err(e) => CompactString::from_utf8_lossy(e.as_bytes()),
    }
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Lexer { text, pos: 0 }
    }

    /// The character starting at byte `at` (all delimiters are ASCII, so `at` is a boundary).
    fn char_at(&self, at: usize) -> char {
        self.text
            .get(at..)
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{fffd}')
    }

    /// Reads the words up to the next `;`, `{`, `}` or the end of the text.
    #[cfg(test)]
    pub(crate) fn next_statement(&mut self) -> Result<Statement, LexError> {
        let mut words = Vec::new();
        let end = self.next_into(&mut words)?;
        Ok(Statement { words, end })
    }

    /// Reads the words up to the next `;`, `{`, `}` or the end of the text into `words` (cleared
    /// first, so that one buffer serves every statement) and returns what ended them.
    pub(crate) fn next_into(&mut self, words: &mut Vec<Word>) -> Result<Stop, LexError> {
        let bytes = self.text.as_bytes();
        words.clear();
        let mut need_space = false;
        let mut last_space = true;
        let mut comment = false;
        let mut variable = false;
        let mut escaped = false;
        let mut s_quoted = false;
        let mut d_quoted = false;
        let mut start = self.pos;
        // whether the word being read holds a `\\` (nearly none do: no unescaping then)
        let mut backslash = false;
        let mut quote_at = self.pos;

        loop {
            // bulk skips over the bytes that the step below would pass over one at a time
            // without changing any state: a comment's text up to its newline, the blanks
            // between words, the plain bytes of a word and the text of a quoted string
            if comment {
                self.pos = memchr::memchr(b'\n', bytes.get(self.pos..).unwrap_or_default())
                    .map_or(bytes.len(), |i| self.pos + i);
            } else if escaped || need_space {
            } else if last_space {
                self.pos += skip_while(bytes, self.pos, is_space);
            } else if d_quoted || s_quoted {
                let quote = if d_quoted { b'"' } else { b'\'' };
                let rest = bytes.get(self.pos..).unwrap_or_default();
                let skipped = memchr::memchr2(quote, b'\\', rest).unwrap_or(rest.len());
                if skipped > 0 {
                    // in a quoted string `$` only keeps a following `{` from ending a word,
                    // which a `{` cannot do there anyway
                    variable = false;
                    self.pos += skipped;
                }
            } else {
                let skipped = skip_while(bytes, self.pos, is_plain);
                if skipped > 0 {
                    variable = false;
                    self.pos += skipped;
                }
            }
            let Some(&ch) = bytes.get(self.pos) else {
                if s_quoted || d_quoted {
                    return Err(LexError::UnterminatedQuote { opened: quote_at });
                }
                if !words.is_empty() || !last_space {
                    let started = words.first().map_or(start, |w| w.start);
                    return Err(LexError::UnexpectedEof { started });
                }
                return Ok(Stop::Eof);
            };
            let at = self.pos;
            self.pos += 1;

            if ch == b'\n' {
                comment = false;
            }
            if comment {
                continue;
            }
            if escaped {
                escaped = false;
                continue;
            }
            if need_space {
                if is_space(ch) {
                    last_space = true;
                    need_space = false;
                    continue;
                }
                if let Some(end) = terminator(ch, at) {
                    return Ok(end);
                }
                match ch {
                    b')' => {
                        last_space = true;
                        need_space = false;
                    }
                    _ => {
                        return Err(LexError::Unexpected {
                            at,
                            ch: self.char_at(at),
                        })
                    }
                }
            }

            if last_space {
                start = at;
                backslash = false;
                if is_space(ch) {
                    continue;
                }
                match ch {
                    b';' | b'{' => {
                        if words.is_empty() {
                            return Err(LexError::Unexpected { at, ch: ch as char });
                        }
                        let end = if ch == b'{' {
                            Stop::BlockStart(at)
                        } else {
                            Stop::Semicolon(at)
                        };
                        return Ok(end);
                    }
                    b'}' => {
                        if !words.is_empty() {
                            return Err(LexError::Unexpected { at, ch: '}' });
                        }
                        return Ok(Stop::BlockEnd(at));
                    }
                    b'#' => comment = true,
                    b'\\' => {
                        escaped = true;
                        backslash = true;
                        last_space = false;
                    }
                    b'"' | b'\'' => {
                        start = at + 1;
                        quote_at = at;
                        d_quoted = ch == b'"';
                        s_quoted = ch == b'\'';
                        last_space = false;
                    }
                    b'$' => {
                        variable = true;
                        last_space = false;
                    }
                    _ => last_space = false,
                }
                continue;
            }

            if ch == b'{' && variable {
                continue;
            }
            variable = false;
            if ch == b'\\' {
                escaped = true;
                backslash = true;
                continue;
            }
            if ch == b'$' {
                variable = true;
                continue;
            }
            let found = if d_quoted {
                d_quoted = ch != b'"';
                !d_quoted
            } else if s_quoted {
                s_quoted = ch != b'\'';
                !s_quoted
            } else {
                is_space(ch) || ch == b';' || ch == b'{'
            };
            if !found {
                continue;
            }
            let quoted = matches!(ch, b'"' | b'\'');
            if quoted {
                need_space = true;
            } else {
                last_space = true;
            }
            let text = self.text.get(start..at).unwrap_or_default();
            let value = if backslash {
                unescape(text)
            } else {
                CompactString::new(text)
            };
            let (wstart, wend) = if quoted {
                (start.saturating_sub(1), at + 1)
            } else {
                (start, at)
            };
            words.push(Word {
                start: wstart,
                end: wend,
                value,
            });
            if let (false, Some(end)) = (quoted, terminator(ch, at)) {
                return Ok(end);
            }
        }
    }
}

impl Lexer<'_> {
    /// Skips the Lua code of a `*_by_lua_block { … }` (OpenResty), whose `{` the last statement
    /// ended with, and returns the offset of the `}` that closes it. The code is Lua, not nginx
    /// syntax, so it is scanned as lua-nginx-module does: braces counted outside Lua strings
    /// (`'…'`, `"…"` with `\` escapes, long brackets `[[…]]`, `[==[…]==]`) and comments (`--` to
    /// the end of the line, `--[[…]]`).
    pub(crate) fn skip_lua_block(&mut self, opened: usize) -> Result<usize, LexError> {
        let bytes = self.text.as_bytes();
        let mut depth = 1usize;
        let eof = |opened| LexError::UnexpectedEof { started: opened };
        while let Some(&ch) = bytes.get(self.pos) {
            let at = self.pos;
            self.pos += 1;
            match ch {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(at);
                    }
                }
                b'"' | b'\'' => loop {
                    match bytes.get(self.pos) {
                        None => return Err(LexError::UnterminatedQuote { opened: at }),
                        Some(b'\\') => self.pos += 2,
                        Some(&c) if c == ch => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => self.pos += 1,
                    }
                },
                b'[' => {
                    if let Some(level) = long_bracket(bytes, at) {
                        self.pos = close_long_bracket(bytes, at + level + 2, level)
                            .ok_or(LexError::UnterminatedQuote { opened: at })?;
                    }
                }
                b'-' if bytes.get(self.pos) == Some(&b'-') => {
                    self.pos += 1;
                    match long_bracket(bytes, self.pos) {
                        Some(level) => {
                            self.pos = close_long_bracket(bytes, self.pos + level + 2, level)
                                .ok_or(eof(opened))?;
                        }
                        None => {
                            while bytes.get(self.pos).is_some_and(|&c| c != b'\n') {
                                self.pos += 1;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Err(eof(opened))
    }
}

/// The level of a Lua long bracket opening at `at` (`[[` is 0, `[==[` is 2), if one does.
fn long_bracket(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let level = bytes
        .get(at + 1..)?
        .iter()
        .take_while(|&&c| c == b'=')
        .count();
    (bytes.get(at + 1 + level) == Some(&b'[')).then_some(level)
}

/// The offset just past the `]=…=]` of `level` that closes a long bracket, searching from `from`.
fn close_long_bracket(bytes: &[u8], from: usize, level: usize) -> Option<usize> {
    let mut i = from;
    while let Some(&c) = bytes.get(i) {
        if c == b']'
            && bytes
                .get(i + 1..i + 1 + level)
                .is_some_and(|eq| eq.iter().all(|&e| e == b'='))
            && bytes.get(i + 1 + level) == Some(&b']')
        {
            return Some(i + level + 2);
        }
        i += 1;
    }
    None
}

/// The end of statement that a `;` or `{` at `at` makes.
fn terminator(ch: u8, at: usize) -> Option<Stop> {
    match ch {
        b';' => Some(Stop::Semicolon(at)),
        b'{' => Some(Stop::BlockStart(at)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(Vec<String>, Stop)> {
        let mut lexer = Lexer::new(text);
        let mut out = Vec::new();
        loop {
            let st = lexer.next_statement().unwrap();
            let end = st.end;
            out.push((
                st.words.into_iter().map(|w| w.value.to_string()).collect(),
                end,
            ));
            if end == Stop::Eof {
                return out;
            }
        }
    }

    fn words(text: &str) -> Vec<String> {
        values(text).into_iter().flat_map(|(w, _)| w).collect()
    }

    #[test]
    fn words_end_at_space_semicolon_and_brace() {
        assert_eq!(
            values("a b;c{ }"),
            vec![
                (vec!["a".into(), "b".into()], Stop::Semicolon(3)),
                (vec!["c".into()], Stop::BlockStart(5)),
                (vec![], Stop::BlockEnd(7)),
                (vec![], Stop::Eof),
            ]
        );
    }

    #[test]
    fn quotes_and_escapes_follow_nginx() {
        assert_eq!(words(r#"a "x y" 'q\'s';"#), ["a", "x y", "q's"]);
        assert_eq!(words(r#"a "say \"hi\"";"#), ["a", "say \"hi\""]);
        assert_eq!(words(r#"a "t\tn\nb\\ r\.x";"#), ["a", "t\tn\nb\\ r\\.x"]);
        assert_eq!(words(r"a ~\.php$;"), ["a", r"~\.php$"]);
        assert_eq!(words(r"a b\ c;"), ["a", r"b\ c"]);
        // a quote inside a word is an ordinary character
        assert_eq!(words(r#"a b"c;"#), ["a", "b\"c"]);
        // `)` may follow a closing quote and becomes its own word, as in `if`
        assert_eq!(words(r#"if ($a = "x") {}"#), ["if", "($a", "=", "x", ")"]);
    }

    #[test]
    fn variables_braces_comments_and_closing_brace_in_words() {
        assert_eq!(words("a ${host}x;"), ["a", "${host}x"]);
        assert_eq!(words("a b${c}d;"), ["a", "b${c}d"]);
        assert_eq!(words("a b#c; # rest ; {\n d;"), ["a", "b#c", "d"]);
        assert_eq!(words("a x}y;"), ["a", "x}y"]);
        // a comment may sit between the words of a directive
        assert_eq!(words("a # c\n b;"), ["a", "b"]);
    }

    #[test]
    fn word_spans_include_quotes() {
        let text = r#"add_header X "a b";"#;
        let st = Lexer::new(text).next_statement().unwrap();
        let w = &st.words[2];
        assert_eq!(&text[w.start..w.end], r#""a b""#);
        assert_eq!(st.end, Stop::Semicolon(text.len() - 1));
    }

    #[test]
    fn errors_carry_offsets() {
        let err = |t: &str| {
            let mut l = Lexer::new(t);
            loop {
                match l.next_statement() {
                    Ok(st) if st.end == Stop::Eof => return None,
                    Ok(_) => {}
                    Err(e) => return Some(e),
                }
            }
        };
        assert_eq!(err(";"), Some(LexError::Unexpected { at: 0, ch: ';' }));
        assert_eq!(err("a {"), None);
        assert_eq!(err("a }"), Some(LexError::Unexpected { at: 2, ch: '}' }));
        assert_eq!(
            err(r#"a "b"c;"#),
            Some(LexError::Unexpected { at: 5, ch: 'c' })
        );
        assert_eq!(
            err("a 'b;\n"),
            Some(LexError::UnterminatedQuote { opened: 2 })
        );
        assert_eq!(err("x; a b"), Some(LexError::UnexpectedEof { started: 3 }));
        assert_eq!(err("a\\"), Some(LexError::UnexpectedEof { started: 0 }));
        assert_eq!(err("# only a comment"), None);
    }
}
