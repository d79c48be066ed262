//! Human-readable text for `conclavectl` results: tables, message lines, UTC clock times, and
//! the verdict on whether a cluster is degraded.
//!
//! Pure string building; this module must never write to stdout/stderr or talk to a server.

use ops::{Channel, ClusterStatus, DnsRecord, Message, User};

/// Left-aligned columns separated by two spaces, without trailing blanks.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            for _ in cell.chars().count()..width {
                line.push(' ');
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `HH:MM:SS` in UTC for a Unix time in milliseconds.
pub(crate) fn hms_utc(ts_ms: u64) -> String {
    let secs_of_day = (ts_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60
    )
}

/// `HH:MM` in UTC for a Unix time in milliseconds.
pub(crate) fn hm_utc(ts_ms: u64) -> String {
    let secs_of_day = (ts_ms / 1000) % 86_400;
    format!("{:02}:{:02}", secs_of_day / 3600, (secs_of_day / 60) % 60)
}

/// Message bodies are written by other users: terminal control sequences are shown escaped
/// so a message cannot rewrite the operator's screen. Newlines and tabs are kept.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `#seq [HH:MM:SS] author: body`
pub(crate) fn message_line(m: &Message) -> String {
    format!(
        "#{} [{}] {}: {}",
        m.seq,
        hms_utc(m.ts_ms),
        sanitize(&m.author),
        sanitize(&m.body)
    )
}

/// One line per search result: `#channel #seq [YYYY-MM-DD HH:MM:SS] author: snippet`, the
/// matched words between `[` and `]` (the offsets are UTF-16, as the API gives them).
pub(crate) fn search_results(results: &[api::rest::SearchResult]) -> String {
    if results.is_empty() {
        return "no messages found\n".to_owned();
    }
    let mut out = String::new();
    for r in results {
        let units: Vec<u16> = r.snippet.text.encode_utf16().collect();
        let mut text = String::new();
        let mut at = 0usize;
        for &[a, b] in &r.snippet.highlights {
            let (a, b) = (a as usize, b as usize);
            if a < at || b > units.len() || a > b {
                continue; // not what the server documents: show the text unmarked there
            }
            text.push_str(&String::from_utf16_lossy(&units[at..a]));
            text.push('[');
            text.push_str(&String::from_utf16_lossy(&units[a..b]));
            text.push(']');
            at = b;
        }
        text.push_str(&String::from_utf16_lossy(&units[at..]));
        let m = &r.message;
        out.push_str(&format!(
            "#{} #{} [{} {}] {}: {}\n",
            sanitize(&m.channel),
            m.seq,
            ymd_utc(m.ts_ms),
            hms_utc(m.ts_ms),
            sanitize(&m.author),
            sanitize(&text).replace('\n', " ")
        ));
    }
    out
}

/// `YYYY-MM-DD` in UTC for a Unix time in milliseconds (civil-from-days, proleptic Gregorian).
pub(crate) fn ymd_utc(ts_ms: u64) -> String {
    let days = (ts_ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Why the cluster is not fully healthy; empty when every node is healthy and ready.
pub(crate) fn degraded_reasons(status: &ClusterStatus) -> Vec<String> {
    let mut reasons = Vec::new();
    if status.nodes.is_empty() {
        reasons.push("no nodes reported".to_owned());
    }
    if status.leader_id.is_none() {
        reasons.push(format!("node {} sees no leader", status.node_id));
    }
    for n in &status.nodes {
        if !n.healthy {
            let why = n.error.as_deref().unwrap_or("did not answer the probe");
            reasons.push(format!("node {} unhealthy ({})", n.id, sanitize(why)));
        } else if !n.ready {
            match &n.error {
                Some(why) => reasons.push(format!("node {} not ready ({})", n.id, sanitize(why))),
                None => reasons.push(format!("node {} not ready", n.id)),
            }
        }
    }
    reasons
}

/// The `status` table plus a one-line verdict.
pub(crate) fn cluster_status(status: &ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|n| {
            let mark = if Some(n.id) == status.leader_id {
                "*"
            } else {
                ""
            };
            vec![
                format!("{mark}{}", n.id),
                sanitize(&n.role),
                yes_no(n.voter),
                opt(n.term),
                opt(n.last_applied),
                yes_no(n.healthy),
                yes_no(n.ready),
                yes_no(n.draining),
                sanitize(&n.api_addr),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID", "ROLE", "VOTER", "TERM", "APPLIED", "HEALTHY", "READY", "DRAINING", "API_ADDR",
        ],
        &rows,
    );
    let leader = status
        .leader_id
        .map_or_else(|| "none".to_owned(), |id| format!("node {id} (*)"));
    out.push_str(&format!(
        "leader: {leader}, term {} (as seen by node {})\n",
        status.term, status.node_id
    ));
    let reasons = degraded_reasons(status);
    if reasons.is_empty() {
        out.push_str("cluster healthy\n");
    } else {
        out.push_str(&format!("cluster DEGRADED: {}\n", reasons.join("; ")));
    }
    out.push_str(&storage_lines(status));
    out.push_str(&insecure_warning(status));
    out
}

/// One line per node whose storage is not `ok` (below its free-space watermark, or failed and
/// waiting to restart), with its free space and reason; empty when every node's is fine.
fn storage_lines(status: &ClusterStatus) -> String {
    let mut out = String::new();
    for n in &status.nodes {
        let Some(s) = &n.storage else { continue };
        if s.state == "ok" {
            continue;
        }
        let free = s
            .free_bytes
            .map_or_else(|| "unknown".to_owned(), |b| format!("{b} bytes"));
        out.push_str(&format!(
            "storage: node {} {}: {} (free {free}, watermark {} bytes)\n",
            n.id,
            sanitize(&s.state),
            sanitize(s.reason.as_deref().unwrap_or("-")),
            s.min_free_bytes
        ));
    }
    out
}

/// One warning line naming the nodes that run with `insecure_plaintext = true` (a LAN address
/// without TLS: anyone on the network can read the traffic and talk to the cluster port);
/// empty when there are none.
fn insecure_warning(status: &ClusterStatus) -> String {
    let ids: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| n.insecure_plaintext)
        .map(|n| n.id.to_string())
        .collect();
    if ids.is_empty() {
        return String::new();
    }
    format!(
        "WARNING: insecure_plaintext = true on node(s) {}: plain HTTP without TLS on a non-loopback address (lab only)\n",
        ids.join(", ")
    )
}

/// The static DNS records: `NAME TYPE TTL VALUE`, or a line saying there are none.
pub(crate) fn dns_records(records: &[DnsRecord]) -> String {
    if records.is_empty() {
        return "no static DNS records\n".to_owned();
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                sanitize(&r.name),
                sanitize(&r.rtype),
                r.ttl.to_string(),
                sanitize(&r.value),
            ]
        })
        .collect();
    table(&["NAME", "TYPE", "TTL", "VALUE"], &rows)
}

pub(crate) fn users(users: &[User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                sanitize(&u.username),
                u.role.to_string(),
                yes_no(u.disabled),
            ]
        })
        .collect();
    table(&["USERNAME", "ROLE", "DISABLED"], &rows)
}

pub(crate) fn channels(channels: &[Channel]) -> String {
    let rows: Vec<Vec<String>> = channels
        .iter()
        .map(|c| {
            let mut kind = c.kind.to_string();
            if c.archived {
                kind.push_str(",archived");
            }
            vec![
                sanitize(&c.name),
                kind,
                c.members.len().to_string(),
                c.last_seq.to_string(),
                opt(c.unread),
                sanitize(&c.created_by),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "MEMBERS",
            "LAST_SEQ",
            "UNREAD",
            "CREATED_BY",
        ],
        &rows,
    )
}

/// One chat line: `[#channel] HH:MM author: body` (a reply says which message it answers;
/// continuation lines of a multi-line body are indented).
pub(crate) fn chat_line(m: &Message) -> String {
    let reply = m
        .thread_root
        .map(|root| format!(" (reply to #{root})"))
        .unwrap_or_default();
    let body = sanitize(&readable_body(&m.body)).replace('\n', "\n    ");
    format!(
        "[#{}] {} {}{reply}: {body}",
        sanitize(&m.channel),
        hm_utc(m.ts_ms),
        sanitize(&m.author)
    )
}

/// A message body formatted for a terminal: the Markdown subset of the web client read as text.
/// Fenced code blocks lose their fences and are indented by four spaces under a `[code]` (or
/// `[code: lang]`) line; `[label](url)` links become `label <url>`; every other marker (bold,
/// italics, quotes, lists, inline code) is kept as typed, which reads well as it is.
pub(crate) fn readable_body(body: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut fence: Option<String> = None;
    for line in body.lines() {
        let t = line.trim();
        match &fence {
            Some(f) if t.starts_with(f.as_str()) && t.chars().all(|c| c == '`' || c == '~') => {
                fence = None;
            }
            Some(_) => out.push(format!("    {line}")),
            None => {
                let marker: String = t.chars().take_while(|&c| c == '`' || c == '~').collect();
                let same = marker.chars().all(|c| marker.starts_with(c));
                if marker.len() >= 3 && same {
                    let lang = t[marker.len()..].trim();
                    out.push(if lang.is_empty() {
                        "[code]".to_owned()
                    } else {
                        format!("[code: {lang}]")
                    });
                    fence = Some(marker);
                } else {
                    out.push(links_as_text(line));
                }
            }
        }
    }
    out.join("\n")
}

/// `[label](http…)` as `label <http…>`; anything else unchanged.
fn links_as_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let link = after.find("](").and_then(|close| {
            let url_part = &after[close + 2..];
            let end = url_part.find(')')?;
            let url = &url_part[..end];
            let label = &after[..close];
            let web = url.starts_with("http://") || url.starts_with("https://");
            (web && !label.is_empty() && !url.contains(char::is_whitespace))
                .then(|| (label, url, open + 1 + close + 2 + end + 1))
        });
        match link {
            Some((label, url, consumed)) => {
                out.push_str(&rest[..open]);
                out.push_str(&format!("{label} <{url}>"));
                rest = &rest[consumed..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ops::NodeStatus;

    fn node(id: u64, role: &str, healthy: bool, ready: bool) -> NodeStatus {
        NodeStatus {
            id,
            api_addr: format!("127.0.0.1:808{id}"),
            cluster_addr: format!("127.0.0.1:908{id}"),
            https_addr: None,
            voter: true,
            role: role.into(),
            term: healthy.then_some(3),
            leader_id: Some(1),
            last_log_index: Some(120),
            last_applied: healthy.then_some(120),
            healthy,
            ready,
            draining: false,
            serving: None,
            error: (!healthy).then(|| "timed out".to_owned()),
            insecure_plaintext: false,
            storage: None,
        }
    }

    #[test]
    fn insecure_plaintext_is_warned_about() {
        let mut status = ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            periodic_probe_ms_ago: None,
            nodes: vec![
                node(1, "leader", true, true),
                node(2, "follower", true, true),
            ],
        };
        assert!(!cluster_status(&status).contains("WARNING"));
        status.nodes[1].insecure_plaintext = true;
        let out = cluster_status(&status);
        let line = out.lines().last().unwrap_or_default();
        assert!(
            line.starts_with("WARNING: insecure_plaintext = true on node(s) 2:"),
            "{out}"
        );
    }

    #[test]
    fn clock_time_is_utc() {
        assert_eq!(hms_utc(0), "00:00:00");
        // 2026-01-01T00:00:00.123Z
        assert_eq!(hms_utc(1_767_225_600_123), "00:00:00");
        assert_eq!(
            hms_utc(1_767_225_600_000 + 13 * 3_600_000 + 5 * 60_000 + 9_999),
            "13:05:09"
        );
        assert_eq!(hms_utc(86_399_999), "23:59:59");
    }

    #[test]
    fn search_results_mark_utf16_ranges() {
        // Built from JSON so the test does not depend on every field of the wire type.
        let parsed: Result<api::rest::SearchResult, _> =
            serde_json::from_value(serde_json::json!({
                "message": {"channel": "general", "seq": 7, "author": "bob",
                            "body": "😀 café\u{1b}[2J", "ts_ms": 86_400_000u64 * 365},
                "snippet": {"text": "😀 café\u{1b}[2J", "highlights": [[3, 7], [40, 50]]}
            }));
        let Ok(r) = parsed else {
            panic!("not a search result: {parsed:?}")
        };
        assert_eq!(
            search_results(&[r]),
            "#general #7 [1971-01-01 00:00:00] bob: 😀 [café]\\u{1b}[2J\n"
        );
        assert_eq!(search_results(&[]), "no messages found\n");
        assert_eq!(ymd_utc(1_767_225_600_000), "2026-01-01");
    }

    #[test]
    fn message_line_format_and_escaping() {
        let m = Message {
            channel: "general".into(),
            seq: 42,
            author: "alice".into(),
            body: "hello\x1b[2J".into(),
            ts_ms: 1_767_225_600_123 + 3_723_000,
            client_msg_id: "c-1".into(),
            thread_root: None,
            reply_count: 0,
            edited_at_ms: None,
            deleted: false,
            pinned: false,
            reactions: Default::default(),
            mentions: Vec::new(),
            channel_mention: false,
            attachments: Vec::new(),
        };
        assert_eq!(message_line(&m), "#42 [01:02:03] alice: hello\\u{1b}[2J");
    }

    #[test]
    fn chat_lines() {
        let mut m = Message {
            channel: "general".into(),
            seq: 3,
            author: "alice".into(),
            body: "hi\nthere".into(),
            ts_ms: 1_767_225_600_000 + 13 * 3_600_000 + 5 * 60_000,
            client_msg_id: "c-1".into(),
            thread_root: None,
            reply_count: 0,
            edited_at_ms: None,
            deleted: false,
            pinned: false,
            reactions: Default::default(),
            mentions: Vec::new(),
            channel_mention: false,
            attachments: Vec::new(),
        };
        assert_eq!(chat_line(&m), "[#general] 13:05 alice: hi\n    there");
        m.thread_root = Some(1);
        m.body = "ok".into();
        assert_eq!(chat_line(&m), "[#general] 13:05 alice (reply to #1): ok");
        m.thread_root = None;
        m.body =
            "see **this**:\n```rust\nfn main() {}\n```\n[docs](https://d.lan/x) [x](javascript:y)"
                .into();
        assert_eq!(
            chat_line(&m),
            "[#general] 13:05 alice: see **this**:\n    [code: rust]\n        fn main() {}\n    docs <https://d.lan/x> [x](javascript:y)"
        );
        assert_eq!(hm_utc(86_399_999), "23:59");
    }

    #[test]
    fn healthy_cluster() {
        let status = ClusterStatus {
            node_id: 2,
            leader_id: Some(1),
            term: 3,
            periodic_probe_ms_ago: None,
            nodes: vec![
                node(1, "leader", true, true),
                node(2, "follower", true, true),
            ],
        };
        assert!(degraded_reasons(&status).is_empty());
        let text = cluster_status(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID  ROLE      VOTER  TERM  APPLIED  HEALTHY  READY  DRAINING  API_ADDR"
        );
        assert_eq!(
            lines[1],
            "*1  leader    yes    3     120      yes      yes    no        127.0.0.1:8081"
        );
        assert!(lines[2].starts_with("2   follower"));
        assert_eq!(lines.last().copied(), Some("cluster healthy"));
    }

    #[test]
    fn degraded_cluster() {
        let status = ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            periodic_probe_ms_ago: None,
            nodes: vec![
                node(1, "leader", true, true),
                node(2, "follower", true, false),
                node(3, "unknown", false, false),
            ],
        };
        assert_eq!(
            degraded_reasons(&status),
            vec!["node 2 not ready", "node 3 unhealthy (timed out)"]
        );
        assert!(cluster_status(&status).contains("cluster DEGRADED"));
        let mut low = status.clone();
        low.nodes[1].error = Some("disk space low: 1 B free, watermark 1.0 GiB".into());
        low.nodes[1].storage = Some(ops::StorageStatus {
            free_bytes: Some(1),
            min_free_bytes: 1 << 30,
            state: "low_space".into(),
            reason: low.nodes[1].error.clone(),
        });
        assert_eq!(
            degraded_reasons(&low)[0],
            "node 2 not ready (disk space low: 1 B free, watermark 1.0 GiB)"
        );
        assert!(
            cluster_status(&low).contains(
                "storage: node 2 low_space: disk space low: 1 B free, watermark 1.0 GiB (free 1 bytes, watermark 1073741824 bytes)\n"
            ),
            "{}",
            cluster_status(&low)
        );
        let no_leader = ClusterStatus {
            leader_id: None,
            ..status
        };
        assert!(degraded_reasons(&no_leader)[0].contains("no leader"));
    }

    #[test]
    fn draining_is_shown_and_not_degraded() {
        let mut drained = node(2, "follower", true, true);
        drained.draining = true;
        let status = ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            periodic_probe_ms_ago: None,
            nodes: vec![node(1, "leader", true, true), drained],
        };
        // Draining is an operator's decision, not a fault: `status` still exits 0.
        assert!(degraded_reasons(&status).is_empty());
        let text = cluster_status(&status);
        let row: Vec<&str> = text
            .lines()
            .nth(2)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(row[7], "yes", "{text}");
    }

    #[test]
    fn dns_record_table() {
        assert_eq!(dns_records(&[]), "no static DNS records\n");
        let r = DnsRecord {
            name: "wiki".into(),
            rtype: "A".into(),
            ttl: 300,
            value: "10.0.0.5".into(),
        };
        assert_eq!(
            dns_records(&[r]),
            "NAME  TYPE  TTL  VALUE\nwiki  A     300  10.0.0.5\n"
        );
    }

    #[test]
    fn table_pads_columns() {
        let t = table(
            &["A", "B"],
            &[vec!["long".into(), "x".into()], vec!["s".into(), "".into()]],
        );
        assert_eq!(t, "A     B\nlong  x\ns\n");
    }
}
