//! What is left of a URL once the sanitizer is done with it.
//!
//! Two threats: a URL that does something when opened (`javascript:`, `vbscript:`,
//! `data:` and `file:` run code or read the reader's own files), and a URL that
//! carries data to whoever runs its host (exfiltration: `evil.example/x?d=SECRET`, or
//! `s3cr3t.evil.example`). The first kind is removed at `strict` and `balanced`
//! (see [`dangerous`]). At `strict` every URL form is reduced to a note naming only
//! the registrable domain of its host (see [`host_note`]), including the forms with
//! no `scheme://` that a browser or a model still reads as a link, and the bare host
//! names and e-mail addresses that chat apps turn into links (see [`scheme_less`]).
//!
//! The registrable domain is the public suffix plus one label (`evil.example` for
//! `s3cr3t.evil.example`, `evil.co.uk` for `a.b.evil.co.uk`): the part a person has
//! to register, so it cannot vary with the data it would carry. Public suffixes come
//! from the `psl` crate, which compiles Mozilla's Public Suffix List into the binary
//! (no file and no network at build or run time) and is republished as the list
//! changes; a suffix list written here would be wrong within weeks. Its private
//! section counts too (`github.io`, `ngrok.io`), since each name under it has its own
//! owner: `s3cr3t.owner.ngrok.io` names `owner.ngrok.io`, and `s3cr3t.ngrok.io` stays
//! whole. A lookup of that name reaches only whoever runs `ngrok.io`, which answers for
//! every name right under it, and leads to no one unless the name was registered
//! before the data was known. The price is trusting the list's private section: a
//! suffix's owner sees every lookup under it, and owners ask for their suffixes to be
//! listed (the list's maintainers review each request).

use regex::{Captures, Regex};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use unicode_normalization::char::is_combining_mark;

/// The schemes that run code or read local files when a renderer or browser opens
/// them, whether or not `//` follows.
const DANGEROUS_SCHEMES: [&str; 4] = ["javascript", "vbscript", "data", "file"];

/// A URL of a dangerous scheme, alone or as an autolink (`<javascript:…>`, whose angle
/// brackets go with it). The scheme is matched in any case (the regex is
/// case-insensitive) and spelled with HTML character references too (`&#106;`,
/// `&colon;`, a `&Tab;` between letters), since a renderer decodes those in a link
/// destination; invisible characters and fullwidth forms are gone before this runs.
/// Prose stays: `data:` must be followed by a media type, `,` or `;`, `file:` by a
/// slash or a drive letter, and `javascript:` and `vbscript:` by something other than
/// a space (`JavaScript: the good parts`) or a quote that opens no string.
pub(super) fn dangerous() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let colon = r"(?::|&colon;|&#0*58;?|&#x0*3a;?)";
        // A quoted string with no space in it: `javascript:'<svg onload=…>'` runs the
        // string as the page, so a quote does not end the URL when it opens one. One
        // that opens nothing ends it, as the end of an HTML attribute
        // (`href='javascript:f()'>`) or of a quotation.
        let quoted = r#"'[^'\s<>]*'|"[^"\s<>]*""#;
        // What follows the colon, up to a space, a quote that opens no string or an
        // angle bracket, with balanced parentheses (`javascript:f(1)`), so a link around
        // it keeps its own.
        let body = format!(r#"(?:[^\s'"<>()]|\([^\s'"<>()]*\)|{quoted})*"#);
        let schemes = DANGEROUS_SCHEMES.map(|scheme| {
            let after = match scheme {
                "data" => r"(?:[a-z0-9.+-]+/[a-z0-9.+-]+|[;,])".to_string(),
                "file" => r#"(?:[/\\]|[a-z]:)"#.to_string(),
                _ => format!(r#"(?:[^\s'"<>]|{quoted})"#),
            };
            format!(
                "(?P<{scheme}>{}{BETWEEN_LETTERS}{colon}{after}{body})",
                spelled(scheme)
            )
        });
        let any = schemes.join("|");
        Regex::new(&format!("(?i)<(?:{any})>|{}", any.replace("?P<", "?P<_")))
            .expect("the dangerous-scheme pattern is valid")
    })
}

/// Tabs and line breaks written as character references, which a URL parser drops
/// wherever they stand in a scheme.
const BETWEEN_LETTERS: &str = r"(?:&tab;|&newline;|&#0*(?:9|10|13);?|&#x0*(?:9|a|d);?)*";

/// `word` as a pattern matching each letter as itself or as a numeric character
/// reference, with [`BETWEEN_LETTERS`] between them.
fn spelled(word: &str) -> String {
    word.chars()
        .map(|letter| {
            let code = letter as u32;
            format!("(?:{letter}|&#0*{code};?|&#x0*{code:x};?)")
        })
        .collect::<Vec<_>>()
        .join(BETWEEN_LETTERS)
}

/// The note a dangerous URL matched by [`dangerous`] is replaced by: the scheme's name,
/// without its colon, so the note is not one itself.
pub(super) fn dangerous_note(caps: &Captures) -> String {
    let scheme = DANGEROUS_SCHEMES
        .into_iter()
        .find(|scheme| caps.name(scheme).is_some() || caps.name(&format!("_{scheme}")).is_some())
        .unwrap_or("unsafe");
    format!("({scheme} link removed)")
}

/// A URL written without `scheme://`, which a browser, a lenient renderer or a model
/// still takes for one. Decided as follows (the regex finds candidates,
/// [`scheme_less_note`] keeps only those that are URLs):
///
/// - a host is a domain-like name — labels of letters, digits and hyphens joined by
///   dots, ending in an alphabetic top-level label of two letters or more (or a
///   punycode one, `xn--…`), a trailing dot allowed — or a dotted IPv4 address, or an
///   IPv6 address in brackets; a `user@` may come before it, a `:port` after it. The
///   dots may be any IDNA maps to `.` (see [`DOTS`]), but a name written with one
///   other than `.` is a host only under a suffix the Public Suffix List knows
///   (`s3cr3t。evil。com/x` is one; Chinese or Japanese sentences, which end with
///   `。` and need no spaces, are not);
/// - after `//` or `\\` (`//evil.example`, a UNC path), or after a web scheme whose
///   slashes are missing or are backslashes (`http:evil.example`,
///   `https:/evil.example`, `https:\\evil.example`, which browsers mend), a host is a
///   URL whatever follows;
/// - otherwise only when a path (`/`, or `\` which browsers read alike), a query (`?`
///   and something) or a fragment (`#` and something) follows the host or its port,
///   and the host does not continue a word, a number or a path: it must not follow a
///   letter, digit, `-`, `/` or `\`, nor a `.` that does (so `src/main.rs/x`,
///   `./run.sh` and `C:\notes.md\x` are paths, `1.2.3.4.5/x` is no address, and
///   `a-b.example/x` is one host; `...evil.example/x` is a URL);
/// - an IPv4 address followed by `/` and one or two digits alone is a network prefix
///   (`10.0.0.0/8`), not a URL;
/// - a host with nothing of that after it (a bare host), placed as above and not
///   followed by a letter or digit, is a link when a chat app would fetch something
///   that carries data from it: Slack, Telegram and Discord turn bare host names into
///   links and fetch a preview, and the lookup of the name alone carries what it
///   holds. That is a host with a `user@` (`user:s3cr3t@evil.com`, or an e-mail
///   address, `s3cr3t@evil.com`: data in its local part reaches the mailbox, and
///   every chat app makes a `mailto:` link of it), or a name under a suffix the Public
///   Suffix List knows with labels beyond its registrable domain (`s3cr3t.evil.com`).
///   Its note takes its place and any trailing dot stays after the note, since it more
///   often ends a sentence than roots a name.
///
/// So a bare `evil.example`, `notes.txt?` ending a question, `main.rs:42`, `e.g.`,
/// `v1.2.3`, `1.5/2` and `10:30` stay; `README.md#install` is reduced (a fragment can
/// carry data to a page's script), and so is `Node.js/Deno` (nothing tells it from
/// `evil.example/x`). A bare name whose last label is no known suffix stays
/// (`archive.tar.gz`, `config.local.json`, `jquery.min.js`, `os.path.join`): a chat app
/// links only known top-level domains. So does one with no label beyond its
/// registrable domain (`example.com`, `main.rs`, `owner.github.io`), which carries only
/// what its owner registered. The price is the few dotted names of three parts or more
/// that end in a top-level domain though they name a file or a field (`config.h.in`,
/// `notes.v2.md`, `org.apache.commons.io`, `user.profile.name`): they are reduced too.
/// Leaving out names that end like file names would leave the channel open to anyone
/// registering under `.in`, `.io`, `.md`, `.py`, `.rs`, `.sh` or `.zip`, all of which
/// chat apps link.
pub(super) fn scheme_less() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        // A user, a host and a port, their groups named with `suffix` (a name may be
        // used once in a regex). The user does not start with emphasis or an opening
        // parenthesis, which stay before the note (`**s3cr3t@evil.com**`).
        let authority = |suffix: &str| {
            format!(
                r#"(?P<user{suffix}> [^\s/?\#<>'"\[\]()*_~`@] [^\s/?\#<>'"\[\]]* @ )?
                (?P<host{suffix}>
                    (?:[\p{{L}}\p{{M}}\p{{N}}-]+(?:[{DOTS}]|{DEFANGED_DOT}))+ (?:xn--[a-z0-9-]+|\p{{L}}[\p{{L}}\p{{M}}]+) [{DOTS}]?
                  | [0-9]{{1,3}}(?:(?:[{DOTS}]|{DEFANGED_DOT})[0-9]{{1,3}}){{3}}
                  | \[ [0-9a-f.]*:[0-9a-f.]*:[0-9a-f:.]* (?:%[\w.~-]+)? \]
                )
                (?P<port{suffix}> :[0-9]{{1,5}} )?"#
            )
        };
        let path = r#"(?: [/\\][^\s'"]* | [?\#][^\s'"]+ )"#;
        Regex::new(&format!(
            r#"(?xim)
            (?: (?:h(?:tt|xx)ps?|wss?|ftp)(?::|\[:\]|\(:\)|\[://\])[/\\]{{0,2}} | [/\\]{{2}} ) {} {path}?
          | (?P<lead> ^ | [^\p{{L}}\p{{M}}\p{{N}}\-/\\{DOTS}] | (?:^|[^\p{{L}}\p{{M}}\p{{N}}])[{DOTS}] )
            {} (?P<path>{path})? (?P<tail>[\p{{L}}\p{{M}}\p{{N}}])?"#,
            authority(""),
            authority("_after_lead"),
        ))
        .expect("the scheme-less URL pattern is valid")
    })
}

/// The characters IDNA maps to `.` in a host name (UTS #46): the full stop, the
/// ideographic full stop `。` and its fullwidth and halfwidth forms. A browser reads
/// `s3cr3t。evil。com` as `s3cr3t.evil.com`, and so does the sanitizer when it looks
/// for hosts. NFKC has already made the fullwidth one a `.` and the halfwidth one a
/// `。`; they are listed so the patterns do not depend on it.
const DOTS: &str = r".\x{3002}\x{FF0E}\x{FF61}";
const OTHER_DOTS: [char; 3] = ['\u{3002}', '\u{FF0E}', '\u{FF61}'];

/// Spellings of a dot in a host that a model, or a person, reads back as one (review:
/// `s3cr3t[.]evil[.]com/x` passed `strict` whole, and a model mends it at once): the
/// defanging conventions of security write-ups (`[.]`, `(.)`, `{.}`, `[dot]`, `(dot)`,
/// `{dot}`, with or without spaces around them, a dot or the word `dot` between spaces
/// or tabs), the escape a browser
/// decodes in a host (`%2e`), and the middle dots and bullets drawn like one (`·`,
/// `•`, `∙`, `⋅`, `・`, `‧`). Like the other dots (see [`DOTS`]), a name written with
/// them is a host only under a suffix the Public Suffix List knows, so `polka dot
/// dress` and Catalan's `col·legi` stay. (`hxxp`, `[:]` and `[://]` are read as a
/// scheme's the same way.)
const DEFANGED_DOT: &str = r"(?:[\x20\t]*(?:\[[\x20\t]*(?:\.|dot)[\x20\t]*\]|\([\x20\t]*(?:\.|dot)[\x20\t]*\)|\{[\x20\t]*(?:\.|dot)[\x20\t]*\})[\x20\t]*|%2e|[\x{B7}\x{2022}\x{2219}\x{22C5}\x{30FB}\x{2027}]|[\x20\t]+(?:\.|dot)[\x20\t]+)";

/// `host` with every dot IDNA reads as one, and every [`DEFANGED_DOT`], written `.`.
fn with_ascii_dots(host: &str) -> String {
    static DEFANGED: OnceLock<Regex> = OnceLock::new();
    let defanged = DEFANGED.get_or_init(|| {
        Regex::new(&format!("(?i){DEFANGED_DOT}")).expect("the defanged-dot pattern is valid")
    });
    defanged
        .replace_all(&host.replace(OTHER_DOTS, "."), ".")
        .into_owned()
}

/// Whether the Public Suffix List knows the suffix of `name` (in ICANN's section or the
/// private one), rather than taking its last label for one as its default rule does.
fn has_known_suffix(name: &str) -> bool {
    let name = with_ascii_dots(name).to_lowercase();
    let name = name.trim_end_matches('.');
    psl::suffix(name.as_bytes()).is_some_and(|suffix| suffix.is_known())
}

/// Whether `name` is under a suffix the Public Suffix List knows and has labels before
/// its registrable domain (`s3cr3t.evil.com`, not `evil.com` nor `co.uk`).
fn has_labels_beyond_its_domain(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_lowercase();
    psl::domain(name.as_bytes())
        .is_some_and(|domain| domain.suffix().is_known() && domain.as_bytes().len() < name.len())
}

/// `text` with every [`scheme_less`] URL replaced by its note, and how many there were.
/// A match that is no URL stays, and the search goes on after it, except after a name
/// written with other dots that is no host (see [`scheme_less`]): the search goes on
/// right after the name, since what the match took along as its path may hold a URL
/// (`notes。txt//evil.example/x`).
pub(super) fn reduce_scheme_less(text: &str) -> (String, usize) {
    let pattern = scheme_less();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from, mut found) = (0, 0, 0);
    while let Some(caps) = pattern.captures_at(text, from) {
        let Some(whole) = caps.get(0) else { break };
        match scheme_less_note(&caps) {
            Some(note) => {
                out.push_str(&text[copied..whole.start()]);
                out.push_str(&note);
                (copied, from) = (whole.end(), whole.end());
                found += 1;
            }
            None => {
                // A host is never empty, so the search moves on either way.
                from = match caps.name("host_after_lead") {
                    Some(host) if host.as_str().contains(OTHER_DOTS) => host.end(),
                    _ => whole.end(),
                };
            }
        }
    }
    out.push_str(&text[copied..]);
    (out, found)
}

/// What a [`scheme_less`] match becomes: the host note, after what stood before the
/// URL (which is not part of it), or `None` when the match is no URL (see there).
fn scheme_less_note(caps: &Captures) -> Option<String> {
    let Some(lead) = caps.name("lead") else {
        // After `//` or a scheme, which go with the URL.
        return Some(note_for_host(caps.name("host").map_or("", |m| m.as_str())));
    };
    let written = caps.name("host_after_lead").map_or("", |m| m.as_str());
    let host = with_ascii_dots(written);
    if host != written && !has_known_suffix(&host) && host.parse::<Ipv4Addr>().is_err() {
        // Written with other dots: a host only under a known suffix (see `scheme_less`).
        return None;
    }
    let port = caps.name("port_after_lead");
    let Some(path) = caps.name("path").map(|m| m.as_str()) else {
        // A bare host (see `scheme_less`).
        let continues_a_word = caps.name("tail").is_some() && port.is_none();
        let carries_data =
            caps.name("user_after_lead").is_some() || has_labels_beyond_its_domain(&host);
        if continues_a_word || !carries_data {
            return None;
        }
        let trailing_dot = match port {
            None => {
                &written[written
                    .trim_end_matches(|c| c == '.' || OTHER_DOTS.contains(&c))
                    .len()..]
            }
            Some(_) => "",
        };
        return Some(format!(
            "{}{}{trailing_dot}",
            lead.as_str(),
            note_for_host(&host)
        ));
    };
    let prefix_length = path
        .strip_prefix('/')
        .map(|rest| rest.trim_end_matches(['.', ',', ';', ':', '!', '?', ')']));
    let is_network = prefix_length.is_some_and(|digits| {
        (1..=2).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    }) && port.is_none()
        && host.parse::<Ipv4Addr>().is_ok();
    if is_network {
        return None;
    }
    Some(format!("{}{}", lead.as_str(), note_for_host(&host)))
}

/// `(link to DOMAIN removed)`: where a URL pointed, without anything it could carry.
/// The host is the authority's (after any `user:password@`, before the port), or a
/// mail address's domain.
pub(super) fn host_note(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => url.split_once(':').unwrap_or(("", url)),
    };
    let authority = if ["mailto", "xmpp"]
        .iter()
        .any(|mail| scheme.eq_ignore_ascii_case(mail))
    {
        // The first address, without its query.
        rest.split(['?', ',', '#', '/']).next().unwrap_or_default()
    } else {
        rest.split(['/', '?', '#', '\\']).next().unwrap_or_default()
    };
    note_for_host(authority.rsplit('@').next().unwrap_or_default())
}

/// The note for `host` (with or without its port): a name reduced to its registrable
/// domain, an address as it is. What cannot be a host gives `(link removed)`: keeping
/// its letters would keep what it carries.
fn note_for_host(host: &str) -> String {
    match shown_host(host) {
        Some(host) => format!("(link to {host} removed)"),
        None => "(link removed)".to_string(),
    }
}

/// The host as the note shows it, if it is one. An IPv6 address loses its brackets
/// (the note holds none) and its zone; punctuation around a name (`evil.example)` at
/// the end of a sentence) is not part of it; `www.` is left out, so the note never
/// reads as a link (`www.com` is a registrable domain).
fn shown_host(host: &str) -> Option<String> {
    if let Some(inside) = host.strip_prefix('[') {
        let address = inside.split([']', '%']).next().unwrap_or_default();
        return address
            .parse::<Ipv6Addr>()
            .ok()
            .map(|address| address.to_string());
    }
    let is_name_part = |c: char| c.is_alphanumeric() || is_combining_mark(c);
    let host = with_ascii_dots(host);
    let name = host
        .split(':')
        .next()
        .unwrap_or_default()
        .trim_matches(|c: char| !is_name_part(c));
    let is_name = name.chars().count() <= 253
        && name
            .chars()
            .all(|c| is_name_part(c) || matches!(c, '.' | '-' | '_'));
    if !is_name {
        return None;
    }
    let name = name.to_lowercase();
    let last_label = name.rsplit('.').next().unwrap_or_default();
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        // An address, or nothing a browser would go to.
        return name
            .parse::<Ipv4Addr>()
            .ok()
            .map(|address| address.to_string());
    }
    let mut shown = psl::domain_str(&name).unwrap_or(&name).to_string();
    // Taking one out can make another (`wwwww.w.`), hence the loop.
    while let Some(at) = shown.find("www.") {
        shown.replace_range(at..at + 4, "");
    }
    (!shown.is_empty()).then_some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_reduced_to_their_registrable_domain() {
        for (host, expected) in [
            ("s3cr3t-data.evil.example", "evil.example"),
            ("a.b.evil.co.uk", "evil.co.uk"),
            ("SECRET.Evil.Example.", "evil.example"),
            ("data.owner.github.io", "owner.github.io"),
            ("evil.example", "evil.example"),
            ("co.uk", "co.uk"),
            ("localhost", "localhost"),
            ("10.0.0.1", "10.0.0.1"),
            ("evil.example).", "evil.example"),
        ] {
            assert_eq!(
                note_for_host(host),
                format!("(link to {expected} removed)"),
                "{host}"
            );
        }
        assert_eq!(note_for_host("[::1]:8080"), "(link to ::1 removed)");
        assert_eq!(note_for_host("[fe80::1%eth0]"), "(link to fe80::1 removed)");
        assert_eq!(note_for_host("www.com"), "(link to com removed)");
        // What is no host keeps none of its letters.
        for garbage in [
            "S3CR3T.evil.example)10.0.0.1",
            "s3cr3t.evil.10.0.0.1",
            "1.2.3.999",
            "[s3cr3t::1]",
            "evil example",
        ] {
            assert_eq!(note_for_host(garbage), "(link removed)", "{garbage}");
        }
    }
}
