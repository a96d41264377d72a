//! A small, total parser for the subset of RFC 8941 structured fields that rate-limit
//! headers use: lists of items with parameters (`"default";r=50;t=30`) and dictionaries
//! (`limit=100, remaining=50, reset=30`). It never panics; a malformed member is skipped.

/// A bare item value. Only what rate-limit fields carry is kept apart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BareItem<'a> {
    /// A non-negative integer that fits in `u64`.
    Integer(u64),
    /// A string, token, negative or fractional number, or boolean: kept as text.
    Text(&'a str),
}

impl BareItem<'_> {
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            BareItem::Integer(n) => Some(*n),
            BareItem::Text(_) => None,
        }
    }
}

/// One list or dictionary member.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Member<'a> {
    /// The dictionary key, when the member was written `key=value`.
    pub(crate) key: Option<&'a str>,
    /// The member's value (for a list item, the item itself, e.g. the policy name).
    pub(crate) value: Option<BareItem<'a>>,
    /// Parameters, in order.
    pub(crate) params: Vec<(&'a str, BareItem<'a>)>,
}

impl<'a> Member<'a> {
    /// The integer parameter `name`, if present and a non-negative integer.
    pub(crate) fn param_u64(&self, name: &str) -> Option<u64> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_u64())
    }

    /// The member's name: a dictionary key or the item's text (a policy name).
    pub(crate) fn name(&self) -> Option<&'a str> {
        self.key.or(match self.value {
            Some(BareItem::Text(text)) => Some(text),
            _ => None,
        })
    }
}

/// Parses a list or dictionary. Members that do not parse are dropped.
pub(crate) fn parse_members(input: &str) -> Vec<Member<'_>> {
    split_top_level(input, b',')
        .filter_map(|raw| parse_member(raw.trim()))
        .collect()
}

fn parse_member(raw: &str) -> Option<Member<'_>> {
    if raw.is_empty() {
        return None;
    }
    let mut parts = split_top_level(raw, b';');
    let head = parts.next()?.trim();
    let mut member = Member::default();
    match split_key_value(head) {
        Some((key, value)) if is_key(key) => {
            member.key = Some(key);
            member.value = Some(parse_bare_item(value)?);
        }
        _ => member.value = Some(parse_bare_item(head)?),
    }
    for param in parts {
        let param = param.trim();
        let (key, value) = match split_key_value(param) {
            Some((key, value)) => (key, parse_bare_item(value)?),
            // A bare parameter key is boolean true in RFC 8941.
            None => (param, BareItem::Text("?1")),
        };
        if !is_key(key) {
            return None;
        }
        member.params.push((key, value));
    }
    Some(member)
}

fn split_key_value(s: &str) -> Option<(&str, &str)> {
    // An `=` inside a quoted string does not split.
    if s.starts_with('"') {
        return None;
    }
    let (key, value) = s.split_once('=')?;
    Some((key.trim(), value.trim()))
}

fn is_key(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'*' || bytes[0].is_ascii_uppercase())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*'))
}

fn parse_bare_item(s: &str) -> Option<BareItem<'_>> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('"') {
        let inner = rest.strip_suffix('"')?;
        // Escapes are rare in policy names; the raw text is kept, quotes removed.
        return Some(BareItem::Text(inner));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // RFC 8941 integers have at most 15 digits; longer ones are not integers.
        if s.len() > 15 {
            return None;
        }
        return s.parse().ok().map(BareItem::Integer);
    }
    if s.bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b';' | b'"'))
    {
        return Some(BareItem::Text(s));
    }
    None
}

/// Splits on `sep` outside double-quoted strings.
fn split_top_level(input: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = input.as_bytes();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut index = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while index < bytes.len() {
            let b = bytes[index];
            index += 1;
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quotes = false;
                }
            } else if b == b'"' {
                in_quotes = true;
            } else if b == sep {
                let piece = &input[start..index - 1];
                start = index;
                return Some(piece);
            }
        }
        done = true;
        Some(&input[start..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_with_params_and_dictionaries() {
        let members = parse_members(r#""default";r=50;t=30, "daily";r=0;t=3600"#);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name(), Some("default"));
        assert_eq!(members[0].param_u64("r"), Some(50));
        assert_eq!(members[1].param_u64("t"), Some(3600));

        let dict = parse_members("limit=100, remaining=0, reset=7");
        assert_eq!(dict[1].key, Some("remaining"));
        assert_eq!(dict[1].value, Some(BareItem::Integer(0)));
    }

    #[test]
    fn quoted_separators_do_not_split() {
        let members = parse_members(r#""a,b;c";r=1"#);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name(), Some("a,b;c"));
    }

    #[test]
    fn garbage_members_are_dropped() {
        assert!(parse_members("").is_empty());
        assert!(parse_members(";;;").is_empty());
        let members = parse_members(r#"x;r=9999999999999999999, "ok";r=3"#);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].param_u64("r"), Some(3));
    }
}
