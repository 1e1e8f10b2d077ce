//! The address lines of an e-mail card (To, From, Cc, Bcc, Reply-To), within a budget.
//!
//! A card has room for some 2 000 characters in all on the smallest platform, and an
//! agent decides how many addresses a message has. Cutting a long list with "…" let
//! `attacker@evil.com` sit past the cut behind 45 colleagues. So no address is ever
//! dropped silently: a field whose whole list does not fit is shown without display
//! names, and if that does not fit either, by domain (`45 at example.com,
//! attacker@evil.com`), where a domain with only a few addresses has them listed in
//! full, since the odd one out is the one that matters. Only when even one entry per
//! domain does not fit are domains left out, and then the title says so.
//!
//! A domain anyone can get an address at (`gmail.com`) says nothing about who is
//! behind it: a personal user's friends and the attacker all write from there. Such a
//! domain's count is marked (`12 at gmail.com (public mail: 12 different people)`), and
//! the bare list is tried before any grouping, since it is what shows them apart.
//!
//! A display name can look like an address (`=?utf-8?B?…?= <mallory@evil.example>`
//! decodes to `bob@corp.example <mallory@evil.example>`). A name with an `@` that is not
//! the address itself is shown after the address, marked as a name:
//! `mallory@evil.example (named "bob@corp.example")`. A list is split into addresses as
//! written, and only then is each name decoded, since a name may encode a comma and a
//! whole second entry. Commas are split on even inside an encoded word, where RFC 2047
//! allows none: a parser that does so sends to every address that shows.

use super::clean::one_line;
use super::mail::decode_encoded_words;
use super::LINE_CHARS;

/// Characters all address lines of one message may take together, labels included.
pub(super) const ADDRESS_LINES_CHARS: usize = 1000;
/// A domain with at most this many addresses has them listed when a field is shown by
/// domain.
const LISTED_PER_DOMAIN: usize = 3;
/// One entry of a full list (display name and address).
const ENTRY_CHARS: usize = 160;
/// A display name shortened so its entry's address stays in view.
const NAME_CHARS: usize = 40;
/// Domains where anyone can open an address: grouping by them tells nothing of who
/// the recipients are.
const PUBLIC_MAIL_DOMAINS: [&str; 20] = [
    "me.com",
    "mac.com",
    "pm.me",
    "proton.me",
    "mail.com",
    "zoho.com",
    "fastmail.com",
    "qq.com",
    "163.com",
    "126.com",
    "naver.com",
    "posteo.de",
    "mailbox.org",
    "tutanota.com",
    "t-online.de",
    "orange.fr",
    "libero.it",
    "seznam.cz",
    "comcast.net",
    "mail.ru",
];
/// Providers whose public mail lives under many country domains (`yahoo.co.uk`,
/// `hotmail.fr`, `gmx.at`): a domain whose name before its public suffix is one of
/// these counts as public mail.
const PUBLIC_MAIL_PROVIDERS: [&str; 15] = [
    "gmail",
    "googlemail",
    "outlook",
    "hotmail",
    "live",
    "msn",
    "yahoo",
    "ymail",
    "icloud",
    "aol",
    "protonmail",
    "gmx",
    "web",
    "yandex",
    "rambler",
];

/// Whether anyone can get an address at `domain` (lower case).
fn public_mail(domain: &str) -> bool {
    if PUBLIC_MAIL_DOMAINS.contains(&domain) {
        return true;
    }
    // The provider's name, then a country or generic suffix of one or two short labels
    // (`com`, `de`, `co.uk`, `com.br`).
    let labels: Vec<&str> = domain.split('.').collect();
    let provider_at = |index: usize| {
        labels
            .get(index)
            .is_some_and(|label| PUBLIC_MAIL_PROVIDERS.contains(label))
    };
    let short = |label: &&str| (2..=3).contains(&label.len());
    match labels.len() {
        2 => provider_at(0) && short(&labels[1]),
        3 => provider_at(0) && labels[1..].iter().all(short),
        _ => false,
    }
}
/// An address is shortened past this, keeping its domain.
const ADDRESS_CHARS: usize = 100;
/// The end of a domain is kept when it is longer: `evil.com` is at its end.
const DOMAIN_CHARS: usize = 60;

/// One address of a list, cleaned for display.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mailbox {
    /// As written (display name included), for a full list.
    written: String,
    /// The bare address, for a list by domain.
    address: String,
    /// Lower case, empty when the address has none.
    domain: String,
}

/// An address header of a message: every line of it as one list.
pub(super) struct AddressField {
    label: &'static str,
    header_lines: usize,
    mailboxes: Vec<Mailbox>,
}

impl AddressField {
    /// `values` are the header's lines (a message may repeat `Bcc:`), as written, with
    /// encoded words not decoded.
    pub(super) fn new(label: &'static str, values: &[String]) -> AddressField {
        AddressField {
            label,
            header_lines: values.len(),
            mailboxes: values.iter().flat_map(|value| mailboxes(value)).collect(),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.mailboxes.len()
    }

    /// Every entry as a card shows it in a full list, joined by `, `.
    pub(super) fn written(&self) -> String {
        let entries: Vec<&str> = self.mailboxes.iter().map(|m| m.written.as_str()).collect();
        entries.join(", ")
    }

    pub(super) fn domain_count(&self) -> usize {
        self.domains().len()
    }

    /// Distinct domains with their addresses, in the order first seen.
    fn domains(&self) -> Vec<(&str, Vec<&Mailbox>)> {
        let mut domains: Vec<(&str, Vec<&Mailbox>)> = Vec::new();
        for mailbox in &self.mailboxes {
            match domains
                .iter_mut()
                .find(|(domain, _)| *domain == mailbox.domain)
            {
                Some((_, members)) => members.push(mailbox),
                None => domains.push((&mailbox.domain, vec![mailbox])),
            }
        }
        domains
    }

    fn header_lines_note(&self) -> String {
        if self.header_lines > 1 {
            format!(", {} header lines", self.header_lines)
        } else {
            String::new()
        }
    }

    /// The label and entries at one level of detail; at [`Detail::Cut`] only as many
    /// domains as fit in `room` characters.
    fn render(&self, detail: Detail, room: usize) -> (String, Vec<String>) {
        let count = self.count();
        let by_domain = || {
            format!(
                "{} ({count} address{} at {} domain{}{}):",
                self.label,
                plural(count, "es"),
                self.domain_count(),
                plural(self.domain_count(), "s"),
                self.header_lines_note()
            )
        };
        let every = || match (self.label, self.header_lines) {
            ("To", _) => format!("To (all {count}):"),
            (label, 1) => format!("{label}:"),
            (label, lines) => format!("{label} ({lines} header lines):"),
        };
        match detail {
            Detail::Full => {
                let entries = self.mailboxes.iter().map(|m| m.written.clone()).collect();
                (every(), entries)
            }
            Detail::Addresses => {
                let entries = self.mailboxes.iter().map(|m| m.address.clone()).collect();
                (every(), entries)
            }
            Detail::ByDomain => {
                let entries = self
                    .domains()
                    .into_iter()
                    .flat_map(|(domain, members)| {
                        if members.len() <= LISTED_PER_DOMAIN {
                            members.iter().map(|m| m.address.clone()).collect()
                        } else {
                            vec![count_at(members.len(), domain)]
                        }
                    })
                    .collect();
                (by_domain(), entries)
            }
            Detail::Counts => {
                let entries = self
                    .domains()
                    .into_iter()
                    .map(|(domain, members)| count_at(members.len(), domain))
                    .collect();
                (by_domain(), entries)
            }
            Detail::Cut => {
                let label = by_domain();
                let domains = self.domains();
                let mut used = label.chars().count();
                let mut entries = Vec::new();
                for (index, (domain, members)) in domains.iter().enumerate() {
                    let entry = count_at(members.len(), domain);
                    let left = &domains[index..];
                    let note = format!(
                        "⚠ {} more domain{} ({} address{}) not shown",
                        left.len(),
                        plural(left.len(), "s"),
                        left.iter().map(|(_, m)| m.len()).sum::<usize>(),
                        plural(left.iter().map(|(_, m)| m.len()).sum(), "es"),
                    );
                    // Room for this entry and, after it, the note about the rest.
                    let cost = entry.chars().count() + 2;
                    if used + cost + note.chars().count() + 2 > room {
                        entries.push(note);
                        break;
                    }
                    used += cost;
                    entries.push(entry);
                }
                (label, entries)
            }
        }
    }
}

/// How much of a field is shown, from most to least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Detail {
    Full,
    /// Every address, without display names.
    Addresses,
    ByDomain,
    Counts,
    Cut,
}

impl Detail {
    fn less(self) -> Detail {
        match self {
            Detail::Full => Detail::Addresses,
            Detail::Addresses => Detail::ByDomain,
            Detail::ByDomain => Detail::Counts,
            Detail::Counts | Detail::Cut => Detail::Cut,
        }
    }
}

/// The lines for `fields` (those with no address are skipped) in at most about
/// [`ADDRESS_LINES_CHARS`] characters, and whether any domain had to be left out.
pub(super) fn lines(fields: &[AddressField]) -> (Vec<String>, bool) {
    let fields: Vec<&AddressField> = fields.iter().filter(|f| f.count() > 0).collect();
    let mut details = vec![Detail::Full; fields.len()];
    let mut rooms = vec![ADDRESS_LINES_CHARS; fields.len()];
    let length = |field: &AddressField, detail: Detail, room: usize| {
        let (label, entries) = field.render(detail, room);
        label.chars().count() + entries.iter().map(|e| e.chars().count() + 2).sum::<usize>()
    };
    let mut lengths: Vec<usize> = fields
        .iter()
        .map(|f| length(f, Detail::Full, ADDRESS_LINES_CHARS))
        .collect();
    // Make the longest field shorter, one step at a time, until all fit.
    while lengths.iter().sum::<usize>() > ADDRESS_LINES_CHARS {
        let Some(longest) = (0..fields.len())
            .filter(|&i| details[i] < Detail::Counts)
            .max_by_key(|&i| lengths[i])
        else {
            break;
        };
        details[longest] = details[longest].less();
        lengths[longest] = length(fields[longest], details[longest], ADDRESS_LINES_CHARS);
    }
    // Per-domain counts still too long: the longest fields are cut to what is left.
    let mut cut = false;
    while lengths.iter().sum::<usize>() > ADDRESS_LINES_CHARS {
        let Some(longest) = (0..fields.len())
            .filter(|&i| details[i] == Detail::Counts)
            .max_by_key(|&i| lengths[i])
        else {
            break;
        };
        details[longest] = Detail::Cut;
        let others: usize = lengths.iter().sum::<usize>() - lengths[longest];
        rooms[longest] = ADDRESS_LINES_CHARS.saturating_sub(others);
        lengths[longest] = length(fields[longest], Detail::Cut, rooms[longest]);
        cut = true;
    }
    let mut out = Vec::new();
    for ((field, detail), room) in fields.iter().zip(&details).zip(&rooms) {
        let (label, entries) = field.render(*detail, *room);
        out.extend(wrapped(&label, field.label, &entries));
    }
    (out, cut)
}

/// `label entry, entry, …` over as many lines of at most [`LINE_CHARS`] as it needs;
/// lines after the first start `Label (continued):`.
fn wrapped(label: &str, name: &str, entries: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = label.to_string();
    let mut first_on_line = true;
    for entry in entries {
        // `, entry` and the `,` that ends the line if the next entry goes on the next.
        if !first_on_line && line.chars().count() + entry.chars().count() + 3 > LINE_CHARS {
            line.push(',');
            lines.push(std::mem::replace(&mut line, format!("{name} (continued):")));
            first_on_line = true;
        }
        if !first_on_line {
            line.push(',');
        }
        line.push(' ');
        line.push_str(entry);
        first_on_line = false;
    }
    lines.push(line);
    lines
}

fn count_at(count: usize, domain: &str) -> String {
    if domain.is_empty() {
        format!("{count} without a domain")
    } else if public_mail(domain) {
        format!("{count} at {domain} (public mail: {count} different people)")
    } else {
        format!("{count} at {domain}")
    }
}

fn plural(count: usize, ending: &str) -> &str {
    if count == 1 {
        ""
    } else {
        ending
    }
}

/// The addresses of one header value as written. Entries are split at commas and
/// semicolons outside quotes, angle brackets and comments; then a display name's
/// encoded words are decoded. An entry with `<…>` is one address;
/// one without counts every word with an `@` in it as an address, so a group
/// (`Team: a@x, b@y;`) or a missing comma cannot hide one.
fn mailboxes(value: &str) -> Vec<Mailbox> {
    let mut found = Vec::new();
    for entry in split_entries(value) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if let Some(open) = outside_quotes(entry, '<') {
            let inner = &entry[open + 1..];
            let address = inner.split('>').next().unwrap_or(inner);
            let name = decode_encoded_words(&entry[..open]);
            let written = format!("{name}{}", &entry[open..]);
            found.push(mailbox(&written, Some(&name), address));
            continue;
        }
        let words: Vec<&str> = entry
            .split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == ')')
            .filter(|word| word.contains('@'))
            .collect();
        match words.as_slice() {
            [] if entry.ends_with(':') => {}
            [] => found.push(mailbox(entry, None, entry)),
            [only] => found.push(mailbox(entry, None, only)),
            several => found.extend(several.iter().map(|word| mailbox(word, None, word))),
        }
    }
    found
}

fn mailbox(written: &str, name: Option<&str>, address: &str) -> Mailbox {
    let address = one_line(address.trim(), usize::MAX);
    let domain = match address.rsplit_once('@') {
        Some((_, domain)) => domain
            .trim_matches(|c: char| c == '.' || c == '>' || c.is_whitespace())
            .to_lowercase(),
        None => String::new(),
    };
    let domain = keep_end(&domain, DOMAIN_CHARS);
    let shown_address = match address.rsplit_once('@') {
        Some((local, _)) if address.chars().count() > ADDRESS_CHARS => {
            format!("{}@{domain}", one_line(local, ADDRESS_CHARS / 2))
        }
        _ => address.clone(),
    };
    let name = name
        .map(|name| name.trim().trim_matches('"').trim())
        .filter(|name| !name.is_empty());
    if let Some(name) = name.filter(|name| looks_like_another_address(name, &address)) {
        return Mailbox {
            written: format!("{shown_address} (named \"{}\")", one_line(name, NAME_CHARS)),
            address: shown_address,
            domain,
        };
    }
    let mut written = one_line(written, usize::MAX);
    if written.chars().count() > ENTRY_CHARS {
        written = match name {
            Some(name) => format!("{} <{shown_address}>", one_line(name, NAME_CHARS)),
            None => shown_address.clone(),
        };
    }
    Mailbox {
        written,
        address: shown_address,
        domain,
    }
}

/// Whether a display name has an `@`, so a person could take it for an address, and is
/// not the address itself.
fn looks_like_another_address(name: &str, address: &str) -> bool {
    name.contains('@') && !name.eq_ignore_ascii_case(address)
}

/// The last `max_chars` characters, with `…` in front when cut.
fn keep_end(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_string();
    }
    let mut kept = String::from("…");
    kept.extend(text.chars().skip(count - max_chars));
    kept
}

/// Pieces of an address list between top-level `,` and `;`.
fn split_entries(value: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut angle = 0usize;
    let mut comment = 0usize;
    for (index, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '<' if !quoted && comment == 0 => angle += 1,
            '>' if !quoted && comment == 0 => angle = angle.saturating_sub(1),
            '(' if !quoted => comment += 1,
            ')' if !quoted => comment = comment.saturating_sub(1),
            ',' | ';' if !quoted && angle == 0 && comment == 0 => {
                entries.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    entries.push(&value[start..]);
    entries
}

/// Byte index of the first `wanted` outside double quotes.
fn outside_quotes(text: &str, wanted: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == wanted && !quoted {
            return Some(index);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(value: &str) -> Vec<String> {
        mailboxes(value).into_iter().map(|m| m.address).collect()
    }

    #[test]
    fn entries_are_split_outside_quotes_and_brackets() {
        assert_eq!(
            addresses(r#""Doe, John" <john@example.com>, bob@example.com (Bob, B.)"#),
            ["john@example.com", "bob@example.com"]
        );
        // The display name may look like an address; the address in brackets counts,
        // and is shown first, the name marked as one.
        let tricky = mailboxes(r#""bob@example.com" <attacker@evil.com>"#);
        assert_eq!(tricky[0].domain, "evil.com");
        assert_eq!(
            tricky[0].written,
            r#"attacker@evil.com (named "bob@example.com")"#
        );
        // A name that is the address itself is left as written.
        let same = mailboxes(r#""Bob@Example.com" <bob@example.com>"#);
        assert_eq!(same[0].written, r#""Bob@Example.com" <bob@example.com>"#);
        // Groups, and a missing comma, hide nothing.
        assert_eq!(
            addresses("Team: a@x.example, b@y.example; c@z.example d@evil.example"),
            [
                "a@x.example",
                "b@y.example",
                "c@z.example",
                "d@evil.example"
            ]
        );
        assert_eq!(addresses("undisclosed-recipients:;"), Vec::<String>::new());
    }

    /// A name that encodes a comma and a second entry is one name of one address.
    #[test]
    fn an_encoded_name_is_decoded_after_the_list_is_split() {
        let value =
            "=?utf-8?Q?bob=40corp.example_=3Cbob=40corp.example=3E=2C?= <mallory@evil.example>";
        let found = mailboxes(value);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].address, "mallory@evil.example");
        assert_eq!(
            found[0].written,
            r#"mallory@evil.example (named "bob@corp.example <bob@corp.example>,")"#
        );
        // A plain encoded name is still decoded for the card.
        let found = mailboxes("=?utf-8?B?SsO8cmdlbg==?= <j@example.com>, b@example.com");
        assert_eq!(found[0].written, "Jürgen <j@example.com>");
        assert_eq!(found[1].address, "b@example.com");
    }

    #[test]
    fn a_long_name_or_address_keeps_the_domain_in_view() {
        let long_name = format!("\"{}\" <attacker@evil.com>", "Colleague ".repeat(30));
        let shown = &mailboxes(&long_name)[0];
        assert!(shown.written.ends_with("<attacker@evil.com>"), "{shown:?}");
        let long_address = format!("{}@{}.evil.com", "a".repeat(300), "b".repeat(300));
        let shown = &mailboxes(&long_address)[0];
        assert!(shown.domain.ends_with(".evil.com"), "{shown:?}");
        assert!(shown.address.ends_with(".evil.com"), "{shown:?}");
        assert!(shown.written.chars().count() < 200, "{shown:?}");
    }

    /// A personal user's friends write from gmail.com, and so can an attacker: a list
    /// that fits without its display names is shown address by address, and a domain
    /// anyone can get an address at is marked when its addresses are counted.
    #[test]
    fn a_public_mail_domain_does_not_hide_an_outsider_among_friends() {
        let mut friends: Vec<String> = (0..40)
            .map(|i| format!("Friend Number {i:02} <friend{i:02}@gmail.com>"))
            .collect();
        friends.push("\"Friend Number 07\" <attacker@gmail.com>".into());
        let (shown, cut) = lines(&[AddressField::new("To", &[friends.join(", ")])]);
        let text = shown.join("\n");
        assert!(!cut);
        assert!(
            text.starts_with("To (all 41): friend00@gmail.com"),
            "{text}"
        );
        assert!(text.contains("attacker@gmail.com"), "{text}");
        assert!(!text.contains("Friend Number"), "{text}");
        let many: Vec<String> = (0..90).map(|i| format!("friend{i:02}@gmail.com")).collect();
        let (shown, _) = lines(&[AddressField::new("Cc", &[many.join(", ")])]);
        assert_eq!(
            shown,
            ["Cc (90 addresses at 1 domain): 90 at gmail.com (public mail: 90 different people)"]
        );
        // The same providers under country domains, and others; not a look-alike.
        for domain in [
            "yahoo.co.uk",
            "hotmail.fr",
            "gmx.at",
            "posteo.de",
            "outlook.com.br",
        ] {
            assert!(public_mail(domain), "{domain}");
        }
        for domain in [
            "example.com",
            "gmail.evil.example",
            "live.example.org",
            "webshop.de",
        ] {
            assert!(!public_mail(domain), "{domain}");
        }
    }

    #[test]
    fn many_domains_are_cut_with_a_warning_within_budget() {
        let list: Vec<String> = (0..400)
            .map(|i| format!("user{i}@domain{i}.example"))
            .collect();
        let fields = [AddressField::new("Bcc", &[list.join(", ")])];
        let (lines, cut) = lines(&fields);
        assert!(cut);
        let total: usize = lines.iter().map(|l| l.chars().count()).sum();
        assert!(total <= ADDRESS_LINES_CHARS + 50, "{total}");
        assert!(lines.iter().all(|l| l.chars().count() <= LINE_CHARS));
        let text = lines.join("\n");
        assert!(
            text.starts_with("Bcc (400 addresses at 400 domains):"),
            "{text}"
        );
        assert!(text.contains("more domains ("), "{text}");
    }
}
