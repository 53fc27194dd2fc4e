//! A Gloo extractor's regex rewritten as a Lua pattern, for the part of regex syntax the two
//! share: literals, `.`, classes (`[a-z0-9_]`, `\d`, `\s`, `\w`...), `*` `+` `?` and counted
//! repeats of one character, and capture groups that are not repeated. Envoy's Lua filter has
//! no regex engine; a pattern with the same captures, anchored at both ends (Gloo's regex must
//! match the whole source), gives the same extraction. Anything else (alternation, repeated
//! groups, lookaround, backreferences) is refused with the reason, and the caller warns.

/// Lua keeps at most 32 captures.
const MAX_CAPTURES: u32 = 32;
/// Counted repeats are written out; this bounds the pattern.
const MAX_REPEAT: u32 = 64;

/// The anchored Lua pattern and the number of capture groups.
pub(crate) fn lua_pattern(regex: &str) -> Result<(String, u32), String> {
    let chars: Vec<char> = regex.chars().collect();
    let mut parser = Parser {
        chars: &chars,
        at: 0,
        captures: 0,
    };
    let mut start = 0;
    if chars.first() == Some(&'^') {
        start = 1;
    }
    parser.at = start;
    let mut end = chars.len();
    if end > start && chars[end - 1] == '$' && (end < 2 || chars[end - 2] != '\\') {
        end -= 1;
    }
    let body = parser.sequence(end, 0)?;
    if parser.at != end {
        return Err(format!("unexpected {:?}", chars[parser.at]));
    }
    Ok((format!("^{body}$"), parser.captures))
}

struct Parser<'a> {
    chars: &'a [char],
    at: usize,
    captures: u32,
}

impl Parser<'_> {
    /// Items up to `end` or a `)` closing the group at `depth`.
    fn sequence(&mut self, end: usize, depth: u32) -> Result<String, String> {
        let mut out = String::new();
        while self.at < end {
            let c = self.chars[self.at];
            match c {
                ')' if depth > 0 => return Ok(out),
                ')' => return Err("a ')' without its '('".to_string()),
                '|' => return Err("alternation ('|') has no Lua pattern equivalent".to_string()),
                '^' | '$' => return Err(format!("'{c}' inside the regex (only at its ends)")),
                '(' => out.push_str(&self.group(end, depth)?),
                '*' | '+' | '?' | '{' if self.at == 0 || c != '{' => {
                    return Err(format!("'{c}' repeats nothing"));
                }
                _ => {
                    let atom = self.atom(end)?;
                    out.push_str(&self.quantified(&atom, end)?);
                }
            }
        }
        if depth > 0 {
            return Err("a '(' is not closed".to_string());
        }
        Ok(out)
    }

    fn group(&mut self, end: usize, depth: u32) -> Result<String, String> {
        self.at += 1;
        let capturing = if self.chars.get(self.at) == Some(&'?') {
            if self.chars.get(self.at + 1) != Some(&':') {
                return Err("lookaround and named or flagged groups have no Lua pattern equivalent".to_string());
            }
            self.at += 2;
            false
        } else {
            self.captures += 1;
            if self.captures > MAX_CAPTURES {
                return Err(format!("more than {MAX_CAPTURES} capture groups"));
            }
            true
        };
        let inner = self.sequence(end, depth + 1)?;
        if self.chars.get(self.at) != Some(&')') {
            return Err("a '(' is not closed".to_string());
        }
        self.at += 1;
        if matches!(self.chars.get(self.at), Some('*' | '+' | '?' | '{')) {
            return Err(
                "a repeated group has no Lua pattern equivalent (repeat single characters or classes)".to_string(),
            );
        }
        if !capturing {
            return Ok(inner);
        }
        if inner.is_empty() {
            // `()` is a position capture in Lua, not an empty string.
            return Err("an empty capture group".to_string());
        }
        Ok(format!("({inner})"))
    }

    /// One character's worth of pattern: a literal, `.`, a class or an escape.
    fn atom(&mut self, end: usize) -> Result<String, String> {
        let c = self.chars[self.at];
        self.at += 1;
        Ok(match c {
            // In Gloo's regexes (ECMAScript), '.' does not match a line break.
            '.' => "[^\n]".to_string(),
            '[' => self.class(end)?,
            '\\' => {
                let e = *self.chars.get(self.at).ok_or("a '\\' ends the regex")?;
                self.at += 1;
                match e {
                    'd' => "%d".to_string(),
                    'D' => "%D".to_string(),
                    's' => "%s".to_string(),
                    'S' => "%S".to_string(),
                    'w' => "[%w_]".to_string(),
                    'W' => "[^%w_]".to_string(),
                    'n' => "\n".to_string(),
                    't' => "\t".to_string(),
                    'r' => "\r".to_string(),
                    e if e.is_ascii_punctuation() => format!("%{e}"),
                    e => return Err(format!("the escape '\\{e}' has no Lua pattern equivalent")),
                }
            }
            c => literal(c),
        })
    }

    fn class(&mut self, end: usize) -> Result<String, String> {
        let mut out = String::from("[");
        if self.chars.get(self.at) == Some(&'^') {
            out.push('^');
            self.at += 1;
        }
        let mut first = true;
        loop {
            let c = *self
                .chars
                .get(self.at)
                .filter(|_| self.at < end)
                .ok_or("a '[' is not closed")?;
            self.at += 1;
            match c {
                ']' if !first => break,
                '[' if self.chars.get(self.at) == Some(&':') => {
                    return Err("POSIX classes such as [:alpha:] have no Lua pattern equivalent".to_string());
                }
                '\\' => {
                    let e = *self.chars.get(self.at).ok_or("a '\\' ends the regex")?;
                    self.at += 1;
                    out.push_str(match e {
                        'd' => "%d",
                        'D' => "%D",
                        's' => "%s",
                        'S' => "%S",
                        'w' => "%w_",
                        'n' => "\n",
                        't' => "\t",
                        'r' => "\r",
                        e if e.is_ascii_punctuation() => {
                            out.push('%');
                            out.push(e);
                            continue;
                        }
                        e => return Err(format!("the escape '\\{e}' in a class has no Lua pattern equivalent")),
                    });
                }
                c if c.is_ascii_alphanumeric()
                    && self.chars.get(self.at) == Some(&'-')
                    && self.chars.get(self.at + 1).is_some_and(|e| *e != ']') =>
                {
                    let e = self.chars[self.at + 1];
                    let same_kind = (c.is_ascii_digit() && e.is_ascii_digit())
                        || (c.is_ascii_lowercase() && e.is_ascii_lowercase())
                        || (c.is_ascii_uppercase() && e.is_ascii_uppercase());
                    if !same_kind || e < c {
                        return Err(format!(
                            "the range {c}-{e} (use ranges of digits or of letters of one case)"
                        ));
                    }
                    out.push(c);
                    out.push('-');
                    out.push(e);
                    self.at += 2;
                }
                c if c.is_ascii_alphanumeric() => out.push(c),
                c if c.is_ascii() && !c.is_ascii_control() => {
                    out.push('%');
                    out.push(c);
                }
                c => return Err(format!("{c:?} in a class (use ASCII in classes)")),
            }
            first = false;
        }
        Ok(out + "]")
    }

    /// `atom` with the quantifier that follows it, if any.
    fn quantified(&mut self, atom: &str, end: usize) -> Result<String, String> {
        // Lua quantifiers apply to one byte: a multi-byte literal cannot be repeated.
        let single = atom.len() == 1 || atom.starts_with('%') || atom.starts_with('[');
        let Some(&q) = self.chars.get(self.at).filter(|_| self.at < end) else {
            return Ok(atom.to_string());
        };
        let lazy = |p: &Self| p.chars.get(p.at + 1) == Some(&'?');
        let out = match q {
            '*' | '+' | '?' | '{' if !single => {
                return Err(format!("{atom:?} is more than one byte and cannot be repeated"));
            }
            '*' => {
                let lazy = lazy(self);
                self.at += 1 + usize::from(lazy);
                format!("{atom}{}", if lazy { '-' } else { '*' })
            }
            '+' => {
                let lazy = lazy(self);
                self.at += 1 + usize::from(lazy);
                format!("{atom}{atom}{}", if lazy { '-' } else { '*' })
            }
            '?' => {
                if lazy(self) {
                    return Err("a lazy '??' has no Lua pattern equivalent".to_string());
                }
                self.at += 1;
                format!("{atom}?")
            }
            '{' => {
                let close = self.chars[self.at..end]
                    .iter()
                    .position(|c| *c == '}')
                    .ok_or("a '{' is not closed")?;
                let inside: String = self.chars[self.at + 1..self.at + close].iter().collect();
                self.at += close + 1;
                if self.chars.get(self.at) == Some(&'?') {
                    return Err("a lazy counted repeat has no Lua pattern equivalent".to_string());
                }
                let number = |t: &str| t.trim().parse::<u32>().map_err(|_| format!("the repeat {{{inside}}}"));
                let (min, max) = match inside.split_once(',') {
                    None => (number(&inside)?, Some(number(&inside)?)),
                    Some((min, max)) if max.trim().is_empty() => (number(min)?, None),
                    Some((min, max)) => (number(min)?, Some(number(max)?)),
                };
                if max.is_some_and(|m| m < min) || min.max(max.unwrap_or(0)) > MAX_REPEAT {
                    return Err(format!("the repeat {{{inside}}} (at most {MAX_REPEAT})"));
                }
                let mut out = atom.repeat(min as usize);
                match max {
                    None => out.push_str(&format!("{atom}*")),
                    Some(max) => out.push_str(&format!("{atom}?").repeat((max - min) as usize)),
                }
                out
            }
            _ => atom.to_string(),
        };
        Ok(out)
    }
}

/// A literal character: letters and digits as they are, other ASCII escaped with '%', other
/// characters as their UTF-8 bytes (which Lua matches literally).
fn literal(c: char) -> String {
    if c.is_ascii_alphanumeric() || !c.is_ascii() {
        c.to_string()
    } else {
        format!("%{c}")
    }
}

#[cfg(test)]
mod tests {
    use super::lua_pattern;

    #[test]
    fn rewrites_the_guides_regexes() {
        // https://docs.solo.io/gloo-edge/latest/guides/traffic_management/request_processing/transformations/
        assert_eq!(
            lua_pattern("(.*foo=([^&]*).*)").unwrap(),
            ("^([^\n]*foo%=([^%&]*)[^\n]*)$".to_string(), 2)
        );
        assert_eq!(
            lua_pattern(r"[\s\S]*id: ([0-9]{4})[\s\S]*").unwrap(),
            ("^[%s%S]*id%:% ([0-9][0-9][0-9][0-9])[%s%S]*$".to_string(), 1)
        );
        assert_eq!(lua_pattern(".*").unwrap(), ("^[^\n]*$".to_string(), 0));
        assert_eq!(
            lua_pattern(r"^Bearer (\w+)$").unwrap(),
            ("^Bearer% ([%w_][%w_]*)$".to_string(), 1)
        );
        assert_eq!(lua_pattern("a{1,3}b+?").unwrap(), ("^aa?a?bb-$".to_string(), 0));
        assert_eq!(lua_pattern("(?:x-)(.*)").unwrap(), ("^x%-([^\n]*)$".to_string(), 1));
    }

    #[test]
    fn refuses_what_lua_patterns_cannot_say() {
        for regex in [
            "a|b",
            "(ab)+",
            "(?=a)",
            r"\bword",
            r"(a)\1",
            "()",
            "[[:alpha:]]",
            "é+",
            "a{1,100}",
            "a??",
        ] {
            assert!(lua_pattern(regex).is_err(), "{regex:?} was rewritten");
        }
    }
}
