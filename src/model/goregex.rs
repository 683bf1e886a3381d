//! Go RE2 regex syntax on top of Rust's `regex` crate.
//!
//! Users copy regexes from Prometheus and vmagent configs and PromQL
//! selectors, so a pattern must mean here what it means in Go: `\d \w \s \b`
//! are ASCII, `{` that does not start a repetition is a literal, `\Q...\E`
//! quotes, `\<` is a plain `<`. [`go_to_rust`] rewrites those spots and leaves
//! the rest alone. Shared by series selectors and the relabel engine.

/// Rewrites a Go RE2 pattern into one Rust's `regex` compiles to the same language.
pub fn go_to_rust(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    let mut in_class = false;
    // Right after `[` or `[^`, where Go reads `]` as a literal.
    let mut class_start = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&e) = chars.get(i + 1) else {
                out.push('\\');
                break;
            };
            i += 2;
            class_start = false;
            match e {
                'd' | 'D' | 'w' | 'W' | 's' | 'S' => push_perl_class(&mut out, e, in_class),
                'b' | 'B' if !in_class => {
                    out.push_str(if e == 'b' { "(?-u:\\b)" } else { "(?-u:\\B)" })
                }
                '<' | '>' => out.push(e),
                'Q' => {
                    while i < chars.len() {
                        if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                            i += 2;
                            break;
                        }
                        push_escaped(&mut out, chars[i]);
                        i += 1;
                    }
                }
                '0'..='7' => {
                    // Go reads `\0`, `\0NN` and `\NNN` (two or more digits) as octal;
                    // a lone `\1`..`\7` is a backreference, which both reject.
                    let mut digits = vec![e];
                    while digits.len() < 3 && matches!(chars.get(i), Some('0'..='7')) {
                        digits.push(chars[i]);
                        i += 1;
                    }
                    if e == '0' || digits.len() > 1 {
                        let s: String = digits.iter().collect();
                        let v = u32::from_str_radix(&s, 8).unwrap_or(0);
                        out.push_str(&format!("\\x{{{v:X}}}"));
                    } else {
                        out.push('\\');
                        out.push(e);
                    }
                }
                _ => {
                    out.push('\\');
                    out.push(e);
                }
            }
            continue;
        }
        if in_class {
            let at_start = std::mem::replace(&mut class_start, false);
            match c {
                ']' if at_start => out.push_str("\\]"),
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                '[' if chars.get(i + 1) == Some(&':') => {
                    // POSIX class `[:alpha:]`: same syntax in both.
                    let rest: String = chars[i..].iter().collect();
                    match rest.find(":]") {
                        Some(end) => {
                            out.push_str(&rest[..end + 2]);
                            i += rest[..end + 2].chars().count();
                            continue;
                        }
                        None => out.push_str("\\["),
                    }
                }
                // Rust reads `[` as a nested class and `&&`/`~~` as set operations.
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                i += 1;
                continue;
            }
            '{' => match repetition_len(&chars[i..]) {
                Some(n) => {
                    out.extend(&chars[i..i + n]);
                    i += n;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Length of `{n}`, `{n,}` or `{n,m}` at the start of `s`: the only forms Go
/// treats as a repetition.
fn repetition_len(s: &[char]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if s.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (s.get(i) == Some(&'}')).then_some(i + 1)
}

fn push_perl_class(out: &mut String, class: char, in_class: bool) {
    let body = match class.to_ascii_lowercase() {
        'd' => "0-9",
        'w' => "0-9A-Za-z_",
        _ => "\\t\\n\\f\\r ",
    };
    match (class.is_ascii_uppercase(), in_class) {
        (false, true) => out.push_str(body),
        (false, false) => {
            out.push('[');
            out.push_str(body);
            out.push(']');
        }
        // A negated class nested in a class: Rust allows `[a[^0-9]]`.
        (true, _) => {
            out.push_str("[^");
            out.push_str(body);
            out.push(']');
        }
    }
}

fn push_escaped(out: &mut String, c: char) {
    if regex_syntax_meta(c) {
        out.push('\\');
    }
    out.push(c);
}

fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}
