//! Normalisation of raw Twitch IRC lines (with IRCv3 tags) into chat messages.
//!
//! Parsing is `twitch-irc`'s, so replayed logs and live chat go through the same code.

use streamtap_plugin_sdk::{Badge, ChatMessage, Emote, Value};
use twitch_irc::message::{IRCMessage, ServerMessage};

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

/// Parses one line. PRIVMSG becomes kind `privmsg`; USERNOTICE (subs, raids,
/// announcements) becomes kind `usernotice` with `event`, `system_message` fields.
pub fn parse_line(line: &str) -> Result<ChatMessage, IrcError> {
    let irc = IRCMessage::parse(line).map_err(|e| IrcError::Parse(e.to_string()))?;
    let command = irc.command.clone();
    let tag = |name: &str| irc.tags.0.get(name).cloned();
    let first_msg = tag("first-msg").is_some_and(|v| v == "1");
    let msg = ServerMessage::try_from(irc.clone()).map_err(|e| IrcError::Malformed {
        command: command.clone(),
        reason: e.to_string(),
    })?;
    let mut fields = std::collections::BTreeMap::new();
    let m = match msg {
        ServerMessage::Privmsg(p) => {
            if let Some(bits) = p.bits {
                fields.insert("bits".to_owned(), Value::Int(bits as i64));
            }
            if first_msg {
                fields.insert("first_msg".to_owned(), Value::Bool(true));
            }
            if let Some(r) = &p.reply_parent {
                fields.insert(
                    "reply_parent_id".to_owned(),
                    Value::Str(r.message_id.clone()),
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
        other => {
            let c = IRCMessage::from(other).command;
            return Err(IrcError::NotChat(c));
        }
    };
    if m.id.is_empty() {
        return Err(IrcError::Malformed {
            command,
            reason: "empty `id` tag".into(),
        });
    }
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
