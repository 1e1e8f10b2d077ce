//! Stripe charges, payment intents, transfers and payouts: amount in the currency's
//! units, currency and payee, and the connected account a `Stripe-Account` header makes
//! the call act on (its money, not the platform's).

use super::clean::one_line;
use super::{Recognised, Request};

pub(super) fn money(request: &Request<'_>, object: &str) -> Option<Recognised> {
    let label = match object {
        "charges" => "Stripe charge",
        "payment_intents" => "Stripe payment intent",
        "transfers" => "Stripe transfer",
        "payouts" => "Stripe payout",
        _ => return None,
    };
    let params = request.params().with_query(request.query);
    let amount = stripe_amount(
        params.get("amount").as_deref(),
        params.get("currency").as_deref(),
    );
    let shown = |key: &str| {
        params
            .get(key)
            .map(|v| one_line(&v, 100))
            .filter(|v| !v.is_empty())
    };
    let destination = shown("destination")
        .or_else(|| shown("destination[account]"))
        .or_else(|| shown("transfer_data[destination]"));
    let customer = shown("customer");
    let title = match (object, &destination) {
        ("payouts", Some(destination)) => format!("Pay out {amount} to {destination} ({label})"),
        ("payouts", None) => format!("Pay out {amount} to the default external account ({label})"),
        (_, Some(destination)) => format!("Pay {amount} to {destination} ({label})"),
        ("transfers", None) => format!("Pay {amount} to an unnamed destination ({label})"),
        (_, None) => match &customer {
            Some(customer) => format!("Charge {amount} to customer {customer} ({label})"),
            None => format!("Charge {amount} ({label})"),
        },
    };
    let connected = connected_accounts(request);
    let title = match connected.as_slice() {
        [] => title,
        accounts => format!("{title} on connected account {}", accounts.join(" and ")),
    };
    let mut lines = Vec::new();
    for (key, label) in [
        ("description", "Description"),
        ("customer", "Customer"),
        ("payment_method", "Payment method"),
        ("source", "Source"),
        ("on_behalf_of", "On behalf of"),
        ("receipt_email", "Receipt to"),
        ("statement_descriptor", "Statement descriptor"),
        ("confirm", "Confirm now"),
        ("method", "Payout method"),
    ] {
        if let Some(value) = shown(key) {
            lines.push(format!("{label}: {value}"));
        }
    }
    // Money that goes elsewhere than the title says: the part a connected account
    // gets, and the platform's fee.
    let currency = params.get("currency");
    for (key, label) in [
        ("destination[amount]", "Of which to the destination"),
        ("transfer_data[amount]", "Of which to the destination"),
        ("application_fee_amount", "Application fee"),
        ("application_fee", "Application fee"),
    ] {
        if let Some(value) = params.get(key) {
            let amount = stripe_amount(Some(&value), currency.as_deref());
            lines.push(format!("{label}: {amount}"));
        }
    }
    Some(params.flag(title, lines))
}

/// Every distinct `Stripe-Account` header value, in the order sent.
fn connected_accounts(request: &Request<'_>) -> Vec<String> {
    let mut accounts: Vec<String> = Vec::new();
    for value in request.headers.get_all("stripe-account").iter().take(10) {
        let account = one_line(&String::from_utf8_lossy(value.as_bytes()), 100);
        if !accounts.contains(&account) {
            accounts.push(account);
        }
    }
    accounts
}

/// Stripe amounts are integers in the currency's smallest unit; most currencies have
/// two decimals, a few none or three.
fn stripe_amount(amount: Option<&str>, currency: Option<&str>) -> String {
    let currency = currency
        .map(|c| one_line(c, 10).to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| String::from("(currency not given)"));
    let Some(minor) = amount.and_then(|a| a.trim().parse::<u64>().ok()) else {
        return format!("an unstated amount of {currency}");
    };
    let decimals = match currency.to_ascii_lowercase().as_str() {
        "bif" | "clp" | "djf" | "gnf" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf" | "ugx"
        | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => 3,
        _ => 2,
    };
    let scale = 10u64.pow(decimals);
    let whole = group_thousands(minor / scale);
    if decimals == 0 {
        format!("{whole} {currency}")
    } else {
        let fraction = minor % scale;
        format!(
            "{whole}.{fraction:0width$} {currency}",
            width = decimals as usize
        )
    }
}

/// `1234567` → `1,234,567`, so an extra zero is hard to miss.
pub(super) fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    let first_group = match digits.len() % 3 {
        0 => 3,
        partial => partial,
    };
    for (index, digit) in digits.chars().enumerate() {
        if index >= first_group && (index - first_group) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
