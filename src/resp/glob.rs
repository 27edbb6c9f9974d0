//! Redis's glob patterns (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*`, `?`,
//! `[abc]`, `[^a-z]` and `\` escapes, over bytes, as `stringmatchlen`.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    matches_nocase(pattern, text, false)
}

/// Redis gives up on a pattern that takes it through more than this many
/// `*` groups (`stringmatchlen`, "protection against abusive patterns"):
/// such a pattern matches nothing, here as there.
const MAX_STAR_GROUPS: usize = 1000;

/// [`matches`], ASCII case ignored when `nocase`.
pub fn matches_nocase(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    if inner_star_groups(pattern) > MAX_STAR_GROUPS {
        return false;
    }
    // Iterative with one backtrack point for the last `*`: linear in
    // practice and never recursive, whatever the pattern.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, text[t], nocase),
            Some(b'\\') if p + 1 < pattern.len() => eq(pattern[p + 1], text[t]).then_some(p + 2),
            Some(&c) => eq(c, text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Runs of `*` in `pattern` (outside classes and escapes) but a run that
/// ends it: a trailing run matches at once in Redis, without going deeper.
fn inner_star_groups(pattern: &[u8]) -> usize {
    let (mut groups, mut i) = (0, 0);
    while i < pattern.len() {
        match pattern[i] {
            b'\\' => i += 2,
            b'[' => {
                i += 1;
                while i < pattern.len() && pattern[i] != b']' {
                    i += if pattern[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'*' => {
                while pattern.get(i) == Some(&b'*') {
                    i += 1;
                }
                if i < pattern.len() {
                    groups += 1;
                }
            }
            _ => i += 1,
        }
    }
    groups
}

/// Matches `c` against the class opening at `pattern[open]`; where the
/// pattern continues after it, if `c` is in it.
fn class(pattern: &[u8], open: usize, c: u8, nocase: bool) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let c = fold(c);
    let mut hit = false;
    loop {
        match pattern.get(i) {
            // An unclosed class ends with the pattern, as in Redis.
            None => break,
            Some(b']') => {
                i += 1;
                break;
            }
            Some(b'\\') if i + 1 < pattern.len() => {
                hit |= fold(pattern[i + 1]) == c;
                i += 2;
            }
            Some(&lo) if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() => {
                let (a, b) = (fold(lo), fold(pattern[i + 2]));
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                hit |= (a..=b).contains(&c);
                i += 3;
            }
            Some(&x) => {
                hit |= fold(x) == c;
                i += 1;
            }
        }
    }
    (hit != negate).then_some(i)
}

/// The literal bytes every match of `pattern` starts with: what a scan can
/// ask the store for as a prefix.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_glob_cases() {
        let yes: [(&str, &str); 10] = [
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("key:*:x", "key:1:2:x"),
            ("a\\*b", "a*b"),
            ("[z-a]", "m"),
        ];
        for (p, t) in yes {
            assert!(matches(p.as_bytes(), t.as_bytes()), "{p} ~ {t}");
        }
        let no: [(&str, &str); 6] = [
            ("h?llo", "hllo"),
            ("h[^e]llo", "hello"),
            ("h[a-b]llo", "hcllo"),
            ("a\\*b", "axb"),
            ("abc", "abcd"),
            ("*a", "b"),
        ];
        for (p, t) in no {
            assert!(!matches(p.as_bytes(), t.as_bytes()), "{p} !~ {t}");
        }
        assert!(matches_nocase(b"MAX*", b"maxmemory", true));
        assert_eq!(literal_prefix(b"user:*:name"), b"user:");
        assert_eq!(literal_prefix(b"plain"), b"plain");
    }

    #[test]
    fn a_pathological_pattern_is_quick() {
        let pattern = "a*".repeat(50) + "b";
        let text = "a".repeat(200);
        assert!(!matches(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn more_than_a_thousand_star_groups_match_nothing_as_in_redis() {
        let text = "a".repeat(2000);
        let at_limit = "*?".repeat(MAX_STAR_GROUPS);
        assert!(matches(at_limit.as_bytes(), text.as_bytes()));
        let over = "*?".repeat(MAX_STAR_GROUPS + 1);
        assert!(!matches(over.as_bytes(), text.as_bytes()));
        // A trailing run does not count, escaped and bracketed stars
        // are no groups.
        let trailing = "?*".repeat(MAX_STAR_GROUPS) + "*";
        assert!(matches(trailing.as_bytes(), text.as_bytes()));
        assert_eq!(inner_star_groups(b"a\\*b[*]c*d**"), 1);
    }
}
