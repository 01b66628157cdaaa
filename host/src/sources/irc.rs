//! Normalisation of raw Twitch IRC lines (with IRCv3 tags) into chat events.
//!
//! Parsing is `twitch-irc`'s, so replayed logs and live chat go through the same code: the
//! live `twitch` source hands every line it reads off the socket to [`parse_line`] too.
//!
//! Kinds: `privmsg` (chat), `usernotice` (subs, resubs, gifts, raids, announcements, ...;
//! the Twitch `msg-id` is in the `event` field, event details in further fields),
//! `clearchat` (chat cleared, user banned or timed out) and `clearmsg` (one message
//! deleted). Every event carries the line it came from in the `raw` field, so nothing the
//! normalisation leaves out is lost.

use std::collections::BTreeMap;
use streamtap_plugin_sdk::{Badge, ChatMessage, Emote, Value};
use twitch_irc::message::{
    ClearChatAction, IRCMessage, ServerMessage, TwitchUserBasics, UserNoticeEvent,
};

/// Why a line is not a chat event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IrcError {
    #[error("not an IRC message: {0}")]
    Parse(String),
    #[error("malformed {command}: {reason}")]
    Malformed { command: String, reason: String },
    #[error("not a chat event (command {0})")]
    NotChat(String),
}

/// Commands [`parse_line`] turns into events; every other command is [`IrcError::NotChat`].
pub const EVENT_COMMANDS: &[&str] = &["PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG"];

/// The command word of a raw IRC line (`PRIVMSG` in `@tags :prefix PRIVMSG #c :text`),
/// found without parsing tags or parameters, so the live source can route a line by it
/// and parse chat lines once, in [`parse_line`]. `None` for a line with no command.
pub fn command_of(line: &str) -> Option<&str> {
    let mut rest = line;
    if let Some(r) = rest.strip_prefix('@') {
        rest = r.split_once(' ')?.1.trim_start_matches(' ');
    }
    if let Some(r) = rest.strip_prefix(':') {
        rest = r.split_once(' ')?.1.trim_start_matches(' ');
    }
    let word = rest.split(' ').next().unwrap_or("");
    (!word.is_empty()).then_some(word)
}

fn emotes(list: &[twitch_irc::message::Emote]) -> Vec<Emote> {
    list.iter()
        .filter(|e| e.char_range.end > e.char_range.start)
        .map(|e| Emote {
            id: e.id.clone(),
            start: e.char_range.start as u32,
            // Twitch's positions are inclusive; twitch-irc's range end is exclusive.
            end: (e.char_range.end - 1) as u32,
        })
        .collect()
}

fn badges(list: &[twitch_irc::message::Badge]) -> Vec<Badge> {
    list.iter()
        .map(|b| Badge {
            name: b.name.clone(),
            version: b.version.clone(),
        })
        .collect()
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn user(u: &TwitchUserBasics) -> Value {
    Value::map([
        ("login", Value::from(u.login.as_str())),
        ("id", Value::from(u.id.as_str())),
        ("display_name", Value::from(u.name.as_str())),
    ])
}

/// Event details of a USERNOTICE, by the `msg-id` it came with.
fn usernotice_fields(event: &UserNoticeEvent, f: &mut BTreeMap<String, Value>) {
    let mut put = |k: &str, v: Value| {
        f.insert(k.to_owned(), v);
    };
    match event {
        UserNoticeEvent::SubOrResub {
            cumulative_months,
            streak_months,
            sub_plan,
            sub_plan_name,
            ..
        } => {
            put("months", int(*cumulative_months));
            if let Some(s) = streak_months {
                put("streak_months", int(*s));
            }
            put("sub_plan", sub_plan.as_str().into());
            put("sub_plan_name", sub_plan_name.as_str().into());
        }
        UserNoticeEvent::Raid { viewer_count, .. } => put("viewer_count", int(*viewer_count)),
        UserNoticeEvent::SubGift {
            is_sender_anonymous,
            cumulative_months,
            recipient,
            sub_plan,
            num_gifted_months,
            ..
        } => {
            put("anonymous", Value::Bool(*is_sender_anonymous));
            put("months", int(*cumulative_months));
            put("recipient", user(recipient));
            put("sub_plan", sub_plan.as_str().into());
            put("gift_months", int(*num_gifted_months));
        }
        UserNoticeEvent::SubMysteryGift {
            mass_gift_count,
            sender_total_gifts,
            sub_plan,
        } => {
            put("gift_count", int(*mass_gift_count));
            if let Some(t) = sender_total_gifts {
                put("sender_total_gifts", int(*t));
            }
            put("sub_plan", sub_plan.as_str().into());
        }
        UserNoticeEvent::AnonSubMysteryGift {
            mass_gift_count,
            sub_plan,
        } => {
            put("anonymous", Value::Bool(true));
            put("gift_count", int(*mass_gift_count));
            put("sub_plan", sub_plan.as_str().into());
        }
        UserNoticeEvent::GiftPaidUpgrade { gifter_login, .. } => {
            put("gifter", gifter_login.as_str().into())
        }
        UserNoticeEvent::Ritual { ritual_name } => put("ritual", ritual_name.as_str().into()),
        UserNoticeEvent::BitsBadgeTier { threshold } => put("threshold", int(*threshold)),
        UserNoticeEvent::Announcement { color } => {
            put(
                "color",
                color.clone().map(Value::Str).unwrap_or(Value::Null),
            );
        }
        // Unknown and future variants: the raw line still holds every tag.
        _ => {}
    }
}

/// Parses one line into a chat event (see the module docs for the kinds).
pub fn parse_line(line: &str) -> Result<ChatMessage, IrcError> {
    let irc = IRCMessage::parse(line).map_err(|e| IrcError::Parse(e.to_string()))?;
    let command = irc.command.clone();
    if !EVENT_COMMANDS.contains(&command.as_str()) {
        return Err(IrcError::NotChat(command));
    }
    let tag = |name: &str| irc.tags.0.get(name).cloned();
    let first_msg = tag("first-msg").is_some_and(|v| v == "1");
    let room_id = tag("room-id").unwrap_or_default();
    let malformed = |reason: String| IrcError::Malformed {
        command: command.clone(),
        reason,
    };
    let msg = ServerMessage::try_from(irc.clone()).map_err(|e| malformed(e.to_string()))?;
    let mut fields = BTreeMap::new();
    let m = match msg {
        ServerMessage::Privmsg(p) => {
            if let Some(bits) = p.bits {
                fields.insert("bits".to_owned(), int(bits));
            }
            if first_msg {
                fields.insert("first_msg".to_owned(), Value::Bool(true));
            }
            if let Some(r) = &p.reply_parent {
                fields.insert(
                    "reply_parent_id".to_owned(),
                    Value::Str(r.message_id.clone()),
                );
                fields.insert(
                    "reply_parent".to_owned(),
                    Value::map([
                        ("id", Value::from(r.message_id.as_str())),
                        ("user", user(&r.reply_parent_user)),
                        ("text", Value::from(r.message_text.as_str())),
                    ]),
                );
            }
            if p.is_action {
                fields.insert("action".to_owned(), Value::Bool(true));
            }
            ChatMessage {
                id: p.message_id,
                kind: "privmsg".into(),
                channel: p.channel_login,
                channel_id: p.channel_id,
                user: p.sender.login,
                user_id: p.sender.id,
                display_name: p.sender.name,
                text: p.message_text,
                ts_ms: p.server_timestamp.timestamp_millis(),
                badges: badges(&p.badges),
                emotes: emotes(&p.emotes),
                fields,
            }
        }
        ServerMessage::UserNotice(u) => {
            fields.insert("event".to_owned(), Value::Str(u.event_id.clone()));
            fields.insert(
                "system_message".to_owned(),
                Value::Str(u.system_message.clone()),
            );
            usernotice_fields(&u.event, &mut fields);
            ChatMessage {
                id: u.message_id,
                kind: "usernotice".into(),
                channel: u.channel_login,
                channel_id: u.channel_id,
                user: u.sender.login,
                user_id: u.sender.id,
                display_name: u.sender.name,
                text: u.message_text.unwrap_or_default(),
                ts_ms: u.server_timestamp.timestamp_millis(),
                badges: badges(&u.badges),
                emotes: emotes(&u.emotes),
                fields,
            }
        }
        ServerMessage::ClearChat(c) => {
            let ts_ms = c.server_timestamp.timestamp_millis();
            let (action, login, user_id) = match &c.action {
                ClearChatAction::ChatCleared => ("clear", String::new(), String::new()),
                ClearChatAction::UserBanned {
                    user_login,
                    user_id,
                } => ("ban", user_login.clone(), user_id.clone()),
                ClearChatAction::UserTimedOut {
                    user_login,
                    user_id,
                    timeout_length,
                } => {
                    fields.insert("duration_s".to_owned(), int(timeout_length.as_secs()));
                    ("timeout", user_login.clone(), user_id.clone())
                }
            };
            fields.insert("action".to_owned(), Value::from(action));
            // CLEARCHAT has no `id` tag: room, time and target identify it, so a replayed
            // or re-received line is still stored once.
            ChatMessage {
                id: format!("clearchat:{}:{ts_ms}:{user_id}", c.channel_id),
                kind: "clearchat".into(),
                channel: c.channel_login,
                channel_id: c.channel_id,
                user: login.clone(),
                user_id,
                display_name: login,
                text: String::new(),
                ts_ms,
                badges: Vec::new(),
                emotes: Vec::new(),
                fields,
            }
        }
        ServerMessage::ClearMsg(c) => {
            fields.insert("target_msg_id".to_owned(), Value::Str(c.message_id.clone()));
            if c.is_action {
                fields.insert("action".to_owned(), Value::Bool(true));
            }
            ChatMessage {
                // One deletion per message id.
                id: format!("clearmsg:{}", c.message_id),
                kind: "clearmsg".into(),
                channel: c.channel_login,
                channel_id: room_id,
                user: c.sender_login.clone(),
                user_id: String::new(),
                display_name: c.sender_login,
                text: c.message_text,
                ts_ms: c.server_timestamp.timestamp_millis(),
                badges: Vec::new(),
                emotes: Vec::new(),
                fields,
            }
        }
        other => {
            let c = IRCMessage::from(other).command;
            return Err(IrcError::NotChat(c));
        }
    };
    if m.id.is_empty() || m.id == "clearmsg:" {
        return Err(malformed("empty `id` tag".into()));
    }
    let mut m = m;
    m.fields
        .insert("raw".to_owned(), Value::Str(line.to_owned()));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "@badge-info=subscriber/8;badges=subscriber/6,premium/1;color=#1E90FF;display-name=Bob;emotes=25:6-10;first-msg=1;flags=;id=abc-1;mod=0;room-id=12345;subscriber=1;tmi-sent-ts=1732700000123;turbo=0;user-id=67890;user-type= :bob!bob@bob.tmi.twitch.tv PRIVMSG #chan :hello Kappa";

    #[test]
    fn privmsg_is_normalised() {
        let m = parse_line(LINE).unwrap();
        assert_eq!(m.id, "abc-1");
        assert_eq!(m.channel, "chan");
        assert_eq!(m.channel_id, "12345");
        assert_eq!(m.user, "bob");
        assert_eq!(m.user_id, "67890");
        assert_eq!(m.display_name, "Bob");
        assert_eq!(m.text, "hello Kappa");
        assert_eq!(m.ts_ms, 1732700000123);
        assert_eq!(
            m.emotes,
            vec![Emote {
                id: "25".into(),
                start: 6,
                end: 10
            }]
        );
        assert_eq!(m.badges.len(), 2);
        assert_eq!(m.fields.get("first_msg"), Some(&Value::Bool(true)));
    }

    #[test]
    fn command_of_agrees_with_the_full_parser() {
        let lines = [
            LINE,
            "PING :tmi.twitch.tv",
            ":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!",
            ":justinfan1!justinfan1@justinfan1.tmi.twitch.tv JOIN #chan",
            "@msg-id=sub;room-id=1 :tmi.twitch.tv USERNOTICE #chan :hi",
            "@room-id=1;tmi-sent-ts=2 :tmi.twitch.tv CLEARCHAT #chan",
            "@login=a;target-msg-id=x :tmi.twitch.tv CLEARMSG #chan :gone",
            ":tmi.twitch.tv RECONNECT",
        ];
        for line in lines {
            let full = IRCMessage::parse(line).unwrap();
            assert_eq!(command_of(line), Some(full.command.as_str()), "{line}");
        }
        for bad in ["", "@only-tags", ":only.prefix", "@t=1 :p"] {
            assert_eq!(command_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(matches!(parse_line(""), Err(IrcError::Parse(_))));
        assert!(matches!(
            parse_line("PING :tmi.twitch.tv"),
            Err(IrcError::NotChat(_))
        ));
        let no_id = LINE.replace("id=abc-1;", "");
        assert!(matches!(
            parse_line(&no_id),
            Err(IrcError::Malformed { .. })
        ));
    }
}
