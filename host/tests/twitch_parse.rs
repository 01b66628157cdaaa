//! Tag parsing on captured-style Twitch lines (`tests/fixtures/twitch-captured.log`): emotes
//! with positions after multi-byte characters, badges, replies, bits, first messages,
//! actions, USERNOTICE variants (sub, resub, subgift, submysterygift, raid, announcement),
//! CLEARCHAT (timeout, ban, clear) and CLEARMSG, unicode text and display names.

use streamtap::sources::irc::parse_line;
use streamtap_plugin_sdk::{Badge, ChatMessage, Emote, Value};

fn fixture() -> Vec<(String, ChatMessage)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/twitch-captured.log");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let m = parse_line(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (l.to_owned(), m)
        })
        .collect()
}

fn s(v: &str) -> Value {
    Value::Str(v.to_owned())
}

fn field<'a>(m: &'a ChatMessage, k: &str) -> Option<&'a Value> {
    m.fields.get(k)
}

/// The text an emote covers, from its inclusive character positions.
fn emote_text(m: &ChatMessage, e: &Emote) -> String {
    m.text
        .chars()
        .skip(e.start as usize)
        .take((e.end - e.start + 1) as usize)
        .collect()
}

#[test]
fn every_line_parses_and_keeps_its_raw_line() {
    let all = fixture();
    assert_eq!(all.len(), 16);
    for (line, m) in &all {
        assert_eq!(field(m, "raw"), Some(&s(line)), "{}", m.id);
        assert!(!m.id.is_empty());
        assert!(m.ts_ms > 1_732_700_000_000);
    }
    let kinds: Vec<&str> = all.iter().map(|(_, m)| m.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "privmsg").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "usernotice").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "clearchat").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "clearmsg").count(), 1);
}

#[test]
fn privmsg_core_fields_badges_and_unicode_emotes() {
    let all = fixture();
    let m = &all[0].1;
    assert_eq!(m.id, "8f0e1a52-6b1d-4c4e-9a3b-1f2e3d4c5b6a");
    assert_eq!(m.channel, "pixelqueen");
    assert_eq!(m.channel_id, "12345");
    assert_eq!(m.user, "pixelqueen");
    assert_eq!(m.user_id, "12345");
    assert_eq!(m.display_name, "PixelQueen");
    assert_eq!(m.text, "Kappa 🎉 Keepo héllo PogChamp");
    assert_eq!(m.ts_ms, 1_732_700_000_100);
    assert_eq!(
        m.badges,
        vec![
            Badge {
                name: "broadcaster".into(),
                version: "1".into()
            },
            Badge {
                name: "subscriber".into(),
                version: "12".into()
            },
            Badge {
                name: "partner".into(),
                version: "1".into()
            },
        ]
    );
    // Positions count characters, so the emoji and the accented letter do not shift them.
    let names: Vec<String> = m.emotes.iter().map(|e| emote_text(m, e)).collect();
    assert_eq!(names, ["Kappa", "Keepo", "PogChamp"]);
    assert_eq!(m.emotes[2].id, "305954156");
    assert_eq!(field(m, "first_msg"), None);

    let cjk = &all[5].1;
    assert_eq!(cjk.display_name, "さくら");
    assert_eq!(cjk.user, "sakura_jp");
    assert_eq!(cjk.text, "こんにちは 世界 👋");
    assert_eq!(cjk.channel, "raidsquad");
}

#[test]
fn bits_reply_first_message_and_action() {
    let all = fixture();
    assert_eq!(field(&all[1].1, "bits"), Some(&Value::Int(100)));
    let reply = &all[2].1;
    assert_eq!(
        field(reply, "reply_parent_id"),
        Some(&s("0c7d2b8e-1111-4a2b-8c3d-000000000002"))
    );
    let parent = field(reply, "reply_parent").unwrap();
    assert_eq!(parent.get("text"), Some(&s("Cheer100 great stream today")));
    assert_eq!(
        parent.get("user").and_then(|u| u.get("login")),
        Some(&s("cheerbear"))
    );
    assert_eq!(field(&all[3].1, "first_msg"), Some(&Value::Bool(true)));
    let action = &all[4].1;
    assert_eq!(action.text, "waves at chat");
    assert_eq!(field(action, "action"), Some(&Value::Bool(true)));
}

#[test]
fn usernotice_variants() {
    let all = fixture();
    let sub = &all[6].1;
    assert_eq!(sub.kind, "usernotice");
    assert_eq!(field(sub, "event"), Some(&s("sub")));
    assert_eq!(field(sub, "sub_plan"), Some(&s("Prime")));
    assert_eq!(field(sub, "months"), Some(&Value::Int(1)));
    assert_eq!(
        field(sub, "system_message"),
        Some(&s("PrimeTime subscribed with Prime."))
    );
    assert_eq!(sub.user, "primetime");
    assert_eq!(sub.text, "");

    let resub = &all[7].1;
    assert_eq!(field(resub, "event"), Some(&s("resub")));
    assert_eq!(field(resub, "months"), Some(&Value::Int(12)));
    assert_eq!(field(resub, "streak_months"), Some(&Value::Int(5)));
    assert_eq!(resub.text, "a whole year already Kappa");
    assert_eq!(emote_text(resub, &resub.emotes[0]), "Kappa");

    let gift = &all[8].1;
    assert_eq!(field(gift, "event"), Some(&s("subgift")));
    assert_eq!(
        field(gift, "recipient").and_then(|r| r.get("login")),
        Some(&s("lucky"))
    );
    assert_eq!(field(gift, "gift_months"), Some(&Value::Int(1)));

    let mystery = &all[9].1;
    assert_eq!(field(mystery, "event"), Some(&s("submysterygift")));
    assert_eq!(field(mystery, "gift_count"), Some(&Value::Int(5)));
    assert_eq!(field(mystery, "sender_total_gifts"), Some(&Value::Int(50)));

    let raid = &all[10].1;
    assert_eq!(field(raid, "event"), Some(&s("raid")));
    assert_eq!(field(raid, "viewer_count"), Some(&Value::Int(1234)));
    assert_eq!(raid.user, "raidsquad");

    let ann = &all[11].1;
    assert_eq!(field(ann, "event"), Some(&s("announcement")));
    assert_eq!(field(ann, "color"), Some(&s("PRIMARY")));
    assert_eq!(ann.text, "Giveaway at 8pm ✨ be there");
}

#[test]
fn clearchat_and_clearmsg_are_their_own_kinds() {
    let all = fixture();
    let timeout = &all[12].1;
    assert_eq!(timeout.kind, "clearchat");
    assert_eq!(field(timeout, "action"), Some(&s("timeout")));
    assert_eq!(field(timeout, "duration_s"), Some(&Value::Int(600)));
    assert_eq!(timeout.user, "spammer");
    assert_eq!(timeout.user_id, "555011");
    assert_eq!(timeout.id, "clearchat:12345:1732700001300:555011");

    let ban = &all[13].1;
    assert_eq!(field(ban, "action"), Some(&s("ban")));
    assert_eq!(ban.user, "troll");

    let clear = &all[14].1;
    assert_eq!(field(clear, "action"), Some(&s("clear")));
    assert_eq!(clear.user, "");
    assert_eq!(clear.channel, "raidsquad");

    let del = &all[15].1;
    assert_eq!(del.kind, "clearmsg");
    assert_eq!(del.id, "clearmsg:0c7d2b8e-3333-4a2b-8c3d-000000000099");
    assert_eq!(
        field(del, "target_msg_id"),
        Some(&s("0c7d2b8e-3333-4a2b-8c3d-000000000099"))
    );
    assert_eq!(del.user, "spammer");
    assert_eq!(del.text, "buy followers at example dot com");
}

#[test]
fn broken_lines_are_errors_not_events() {
    let all = fixture();
    // A USERNOTICE without its `msg-id` is malformed; a bare PING is no chat event.
    let no_msg_id = all[10].0.replace("msg-id=raid;", "");
    assert!(parse_line(&no_msg_id).is_err());
    assert!(parse_line("PING :tmi.twitch.tv").is_err());
    assert!(parse_line(":tmi.twitch.tv RECONNECT").is_err());
}
