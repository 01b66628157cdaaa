#!/usr/bin/env python3
"""Generate data/demo-chat.log: a deterministic, synthetic Twitch IRC chat capture.

    python3 scripts/gen_demo_log.py            # writes data/demo-chat.log
    python3 scripts/gen_demo_log.py -o FILE    # writes FILE instead

Python 3 standard library only; the same seed always gives byte-identical output.

What the log holds (see data/README.md for the full description):
  * 3,000 lines of raw PRIVMSG lines with IRCv3 tags as Twitch sends them, LF-terminated,
    in tmi-sent-ts order (strictly increasing) over ~10 minutes;
  * 5 channels with distinct room-ids, ~200 users with stable user-ids;
  * emotes tags with correct code-point positions (inclusive), several emotes and repeated
    emotes per message, emoji before emotes so byte and character offsets differ;
  * English majority plus es, de, fr, pt, ru, ja, ko, it, pl lines; positive, negative
    and neutral sentiment; badges, mods, VIPs, a broadcaster, first-msg=1, bits=100 cheers;
  * a BURST in #pixelqueen: ~400 hype messages ("LETS GOOO", PogChamp spam) within 20 s
    around minute 5, which the demo pipeline's burst detector should alert on.

Deliberately malformed lines (exactly three; 1-based line numbers, fixed below in
MALFORMED). Each replaces the valid line that would have been there:
  line 137   truncated: the line stops in the middle of the tag section (no prefix, no
             command, no text), as if a capture was cut off.
  line 1500  no command: tags and prefix are followed directly by "#channel :text",
             the PRIVMSG command is missing. (Falls inside the burst, on purpose: a parser
             must keep going under load.)
  line 2864  no space after the tags: the tag section runs straight into the ":prefix"
             ("...;user-type=:nick!nick@nick.tmi.twitch.tv PRIVMSG ..."), so a parser
             splitting on the first space gets a garbage tag value and no prefix.
The log file itself contains no comments; these line numbers are only documented here and
in data/README.md.
"""

import argparse
import collections
import os
import random
import sys
import uuid

SEED = 20241127
START_TS_MS = 1732700000000  # 2024-11-27 09:33:20 UTC
SPAN_MS = 600_000  # ten minutes
TOTAL_LINES = 3000
BURST_CHANNEL = "pixelqueen"
BURST_START_MS = 290_000  # burst window, relative to START_TS_MS
BURST_LEN_MS = 20_000
BURST_MESSAGES = 400
MALFORMED = {137: "truncated", 1500: "no-command", 2864: "no-space-after-tags"}
MAX_BYTES = 1_500_000

# Twitch global emotes used in the log: name -> emote id.
EMOTES = {
    "Kappa": "25",
    "PogChamp": "88",
    "LUL": "425618",
    "BibleThump": "86",
    "NotLikeThis": "58765",
    "ResidentSleeper": "245",
    "Kreygasm": "41",
    "SeemsGood": "64138",
    "HeyGuys": "30259",
    "4Head": "354",
    "DansGame": "33",
    "WutFace": "28087",
    "VoHiYo": "81274",
    "CoolStoryBob": "123171",
    "SwiftRage": "34",
}
# Third-party (BTTV/FFZ/7TV) emotes: plain words with no emotes-tag entry, as in real logs.
THIRD_PARTY = ["KEKW", "OMEGALUL", "monkaS", "Sadge", "Copium", "catJAM", "PepeHands", "EZ"]

# name, room-id, language weights of its audience, share of background traffic
CHANNELS = [
    ("pixelqueen", "41235871", {"en": 80, "es": 4, "de": 3, "pt": 4, "fr": 2, "ru": 2, "ja": 2, "ko": 1, "it": 1, "pl": 1}, 0.34),
    ("elgranstreamer", "58201346", {"es": 60, "en": 22, "pt": 12, "it": 4, "fr": 2}, 0.18),
    ("kartoffelkanal", "70918263", {"de": 55, "en": 25, "pl": 10, "ru": 6, "fr": 4}, 0.16),
    ("speedrun_sam", "33071952", {"en": 70, "ja": 10, "ko": 7, "ru": 5, "pl": 4, "de": 4}, 0.17),
    ("lune_fr", "91642207", {"fr": 50, "en": 25, "it": 10, "es": 8, "pt": 7}, 0.15),
]

COLORS = ["#1E90FF", "#FF69B4", "#8A2BE2", "#00FF7F", "#FF4500", "#DAA520", "#5F9EA0",
          "#B22222", "#2E8B57", "#D2691E", "#9ACD32", "#0000FF", "#FF0000", "#008000", ""]

# ---------------------------------------------------------------------------------------
# Message text. {e:Name} is an emote slot (Twitch emote, tagged with its position),
# {t:Name} a third-party emote (plain text), {u} a chatter's name, {n} a number.

TEXT = {
    "en": {
        "pos": [
            "that was the cleanest clutch I have ever seen {e:PogChamp}",
            "LETS GOOO what a play",
            "this run is going so well today {e:SeemsGood}",
            "best stream of the week honestly",
            "omg the timing on that jump was perfect {e:Kreygasm}",
            "I love this song who is the artist",
            "gg well played everyone",
            "{e:PogChamp} {e:PogChamp} {e:PogChamp}",
            "that boss went down so fast {e:PogChamp}",
            "hype hype hype",
            "you are cracked at this game fr",
            "W streamer",
            "this community is so wholesome {e:BibleThump}",
            "new PB incoming I can feel it",
            "that was actually insane {t:KEKW}",
            "thanks for the stream had a great time",
            "clip it clip it clip it",
            "the new overlay looks really clean",
            "{u} nice one",
            "hiii chat {e:HeyGuys}",
            "good morning from Australia {e:VoHiYo}",
            "finally caught a stream live {e:HeyGuys}",
            "that strat was genius ngl",
            "so glad I stayed up for this {e:Kreygasm}",
            "mod {u} is the goat",
        ],
        "neg": [
            "bro really missed that shot again {e:LUL}",
            "this game is so broken lmao",
            "not the lag again {e:NotLikeThis}",
            "that was painful to watch {e:BibleThump}",
            "why would you sell that item before the boss",
            "unlucky that hurt {e:NotLikeThis}",
            "the audio is out of sync again",
            "this patch ruined the whole game honestly",
            "chat is so toxic today",
            "I cant watch this {e:WutFace}",
            "stream keeps buffering for me {e:DansGame}",
            "{e:ResidentSleeper} {e:ResidentSleeper} this part is so boring",
            "thats the third reset in a row {t:Sadge}",
            "worst rng I have ever seen {e:SwiftRage}",
            "ugh he threw the whole game",
            "sound is way too loud",
            "terrible decision honestly {t:monkaS}",
        ],
        "neu": [
            "can someone tell me what game this is",
            "what time does the tournament start tomorrow",
            "how many deaths is that now",
            "is this the new season",
            "what rank is he",
            "first time watching what did I miss",
            "what keyboard is that",
            "{u} what are the rules for the challenge",
            "is there a vod of yesterday",
            "how long has he been streaming",
            "lol",
            "?",
            "brb getting food",
            "{e:Kappa}",
            "clip here https://clips.twitch.tv/SpicyAwkwardOtterKappa",
            "!uptime",
            "what settings are you using",
            "{n} deaths so far",
            "is the giveaway still running",
            "which server is this",
            "{u} same here",
            "ok",
            "he said that last time too {e:Kappa}",
        ],
    },
    "es": {
        "pos": [
            "que buena jugada hermano sos un crack",
            "vamos que se puede ganar esta partida",
            "gracias por el stream de hoy fue genial",
            "hola a todos desde Argentina {e:HeyGuys}",
            "increíble esa jugada {e:PogChamp}",
            "me encanta esta canción",
            "este stream está buenísimo jajaja",
            "el mejor streamer de todos",
        ],
        "neg": [
            "no puede ser que haya fallado eso jajaja {e:LUL}",
            "qué mala suerte {e:NotLikeThis}",
            "este juego me da mucho miedo la verdad",
            "el audio se escucha fatal",
            "otra vez perdió todo qué bronca",
            "qué aburrido está esto {e:ResidentSleeper}",
        ],
        "neu": [
            "alguien sabe a qué hora empieza el torneo",
            "por qué no usas la otra arma",
            "ya me voy a dormir buenas noches chat",
            "qué juego es este",
            "de dónde son todos",
            "cuántas muertes lleva",
        ],
    },
    "de": {
        "pos": [
            "das war richtig stark gespielt {e:PogChamp}",
            "heute ist der Stream richtig gut",
            "grüße aus Berlin an alle im Chat {e:HeyGuys}",
            "das war der beste Zug des ganzen Spiels",
            "danke für den Stream hat Spaß gemacht",
            "sehr geil gemacht",
        ],
        "neg": [
            "das war echt knapp gerade alter",
            "der Boss ist viel zu schwer für uns {e:NotLikeThis}",
            "die Musik ist viel zu laut gerade",
            "schon wieder gestorben das gibt es doch nicht",
            "das Spiel ist total verbuggt {e:DansGame}",
        ],
        "neu": [
            "wie heißt das spiel nochmal",
            "kann mir jemand erklären was gerade passiert ist",
            "ich muss leider schon gehen bis morgen",
            "hast du schon die neue Karte gespielt",
            "wie lange streamst du heute noch",
        ],
    },
    "fr": {
        "pos": [
            "franchement il joue trop bien aujourd'hui",
            "merci pour le live c'était génial",
            "bonjour tout le monde ça va bien {e:HeyGuys}",
            "allez on y croit jusqu'au bout",
            "incroyable cette action {e:PogChamp}",
            "j'adore cette musique",
        ],
        "neg": [
            "mais c'est pas possible il a raté ça {e:LUL}",
            "le son est beaucoup trop fort",
            "quelle malchance vraiment {e:NotLikeThis}",
            "c'est vraiment nul ce patch",
            "ça lag encore une fois",
        ],
        "neu": [
            "quelqu'un sait quand commence le tournoi",
            "je regarde depuis le début du stream",
            "c'est quoi ce jeu",
            "il est quel rang maintenant",
            "bonne nuit à tous je vais dormir",
        ],
    },
    "pt": {
        "pos": [
            "que jogada linda mano muito bom",
            "obrigado pela live de hoje foi incrível",
            "boa noite a todos do Brasil {e:HeyGuys}",
            "vai lá que dá pra ganhar essa partida",
            "que isso mano que jogada {e:PogChamp}",
        ],
        "neg": [
            "não acredito que ele errou isso kkkkkk",
            "esse jogo é muito difícil demais {e:NotLikeThis}",
            "que azar mano de novo",
            "a música está muito alta hoje",
        ],
        "neu": [
            "alguém sabe que horas começa o campeonato",
            "por que você não usou a outra arma",
            "qual é o nome desse jogo",
            "estou assistindo desde o começo da live",
        ],
    },
    "ru": {
        "pos": [
            "вот это было красиво брат {e:PogChamp}",
            "спасибо за стрим сегодня было круто",
            "всем привет из Москвы {e:HeyGuys}",
            "сегодня он играет очень хорошо",
            "лучший стример однозначно",
        ],
        "neg": [
            "не могу поверить что он это пропустил",
            "музыка слишком громкая сейчас",
            "опять лагает {e:NotLikeThis}",
            "это было ужасно если честно",
        ],
        "neu": [
            "кто знает во сколько начинается турнир",
            "почему ты не используешь другое оружие",
            "что это за игра",
            "сколько смертей уже",
        ],
    },
    "ja": {
        "pos": [
            "今のプレイやばすぎるwww",
            "今日の配信ありがとうございました",
            "みなさんこんばんは {e:HeyGuys}",
            "ナイスプレイ！ {e:PogChamp}",
            "今日はめっちゃ調子いいね",
        ],
        "neg": [
            "そのボス強すぎて草",
            "ラグがひどいです {e:NotLikeThis}",
            "音楽の音量が少し大きいです",
            "惜しい！もう少しだったのに",
        ],
        "neu": [
            "大会は何時から始まりますか",
            "なんで別の武器を使わないの",
            "このゲームの名前は何ですか",
            "初見です、よろしくお願いします",
        ],
    },
    "ko": {
        "pos": [
            "방금 그거 진짜 미쳤다 ㅋㅋㅋㅋ",
            "오늘 방송 감사합니다 재밌었어요",
            "안녕하세요 처음 왔어요 {e:HeyGuys}",
            "와 대박 {e:PogChamp}",
        ],
        "neg": [
            "보스가 너무 세서 못 깨겠다",
            "음악 소리가 너무 커요",
            "아 너무 아깝다 {e:NotLikeThis}",
        ],
        "neu": [
            "대회 몇 시에 시작하는지 아시는 분",
            "이 게임 이름이 뭐예요",
            "왜 다른 무기를 안 써요",
        ],
    },
    "it": {
        "pos": [
            "che giocata incredibile fratello {e:PogChamp}",
            "grazie per la live di oggi è stata bellissima",
            "ciao a tutti da Milano {e:HeyGuys}",
            "oggi sta giocando molto bene",
        ],
        "neg": [
            "ma come ha fatto a sbagliare quello {e:LUL}",
            "la musica è troppo alta adesso",
            "che sfortuna incredibile",
        ],
        "neu": [
            "qualcuno sa a che ora inizia il torneo",
            "perché non usi l'altra arma",
            "come si chiama questo gioco",
        ],
    },
    "pl": {
        "pos": [
            "ale akcja to było mega {e:PogChamp}",
            "dzięki za dzisiejszy stream był świetny",
            "siema wszystkim z Krakowa {e:HeyGuys}",
            "dzisiaj gra naprawdę dobrze",
        ],
        "neg": [
            "nie wierzę że on to przegrał",
            "muzyka jest za głośno teraz",
            "znowu laguje {e:NotLikeThis}",
        ],
        "neu": [
            "ktoś wie o której zaczyna się turniej",
            "dlaczego nie użyjesz drugiej broni",
            "jak się nazywa ta gra",
        ],
    },
}

BURST_TEXT = [
    "LETS GOOO",
    "LETS GOOOOOOOO {e:PogChamp}",
    "{e:PogChamp} {e:PogChamp} {e:PogChamp} {e:PogChamp}",
    "{e:PogChamp}",
    "NO WAY",
    "NO WAAAAY {e:PogChamp}",
    "HOLY",
    "CLIP IT",
    "WORLD RECORD",
    "W",
    "WWWWWWW",
    "INSANE {e:Kreygasm}",
    "LETS GOOO {e:PogChamp} {e:PogChamp}",
    "🔥🔥🔥",
    "{t:POGGERS} {t:POGGERS}",
    "GG {e:PogChamp}",
    "HE DID IT",
    "OMG OMG OMG",
    "what just happened {e:PogChamp}",
    "history was made today",
]
BURST_TEXT_OTHER = {
    "es": ["VAMOOOOS", "QUE LOCURA {e:PogChamp}"],
    "pt": ["VAMOOOO", "QUE ISSO {e:PogChamp}"],
    "de": ["LOS GEHTS {e:PogChamp}", "WAHNSINN"],
    "fr": ["ALLEZ {e:PogChamp}", "INCROYABLE"],
    "ru": ["ДАААА {e:PogChamp}"],
    "ja": ["うおおおお {e:PogChamp}"],
    "ko": ["미쳤다 ㅋㅋㅋㅋ {e:PogChamp}"],
    "it": ["DAIII {e:PogChamp}"],
    "pl": ["DAWAJ {e:PogChamp}"],
}
EMOJI = ["😂", "🔥", "❤️", "😭", "👀", "🎉", "💀", "👏", "🙏", "😳"]
LANGS = ["en", "es", "de", "fr", "pt", "ru", "ja", "ko", "it", "pl"]
# Share of users by home language; English is the majority of chatters.
USER_LANGS = {"en": 100, "es": 22, "de": 16, "fr": 14, "pt": 12, "ru": 10, "ja": 8, "ko": 6, "it": 6, "pl": 6}

# Pieces for chatter logins.
LOGIN_A = ["dark", "pixel", "shadow", "lucky", "sleepy", "turbo", "cosmic", "frosty", "silent",
           "crazy", "mega", "tiny", "golden", "neon", "salty", "happy", "lazy", "iron", "wild",
           "blue", "red", "night", "storm", "retro", "hyper", "chill", "spicy", "based", "rusty"]
LOGIN_B = ["wolf", "gamer", "fox", "panda", "ninja", "potato", "dragon", "cat", "knight",
           "wizard", "tiger", "owl", "bean", "goblin", "pirate", "otter", "falcon", "noodle",
           "viking", "bear", "ghost", "toast", "frog", "samurai", "raven", "moose", "duck"]
NATIVE_NAMES = {"ja": ["たろう", "ゆうき", "さくら", "けんた"], "ko": ["민수", "지훈", "하늘"]}


class User:
    def __init__(self, login, display, user_id, lang, color, turbo, prime):
        self.login = login
        self.display = display
        self.user_id = user_id
        self.lang = lang
        self.color = color
        self.turbo = turbo
        self.prime = prime
        self.channels = {}  # channel name -> role dict


def weighted(rng, weights):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def make_users(rng, n=200):
    users, logins, ids = [], set(), set()
    while len(users) < n:
        lang = weighted(rng, USER_LANGS)
        login = rng.choice(LOGIN_A) + rng.choice(["", "_", "x"]) + rng.choice(LOGIN_B)
        if rng.random() < 0.6:
            login += str(rng.randint(1, 9999))
        if login in logins:
            continue
        user_id = str(rng.randint(10_000_000, 999_999_999))
        if user_id in ids:
            continue
        logins.add(login)
        ids.add(user_id)
        display = login
        r = rng.random()
        if lang in NATIVE_NAMES and r < 0.35:
            # Localized display names: the login stays ASCII, as Twitch requires.
            display = rng.choice(NATIVE_NAMES[lang])
        elif r < 0.5:
            # Otherwise a display name may differ from the login only in letter case.
            display = "_".join(w.capitalize() for w in login.split("_"))
        users.append(User(login, display, user_id, lang, rng.choice(COLORS),
                          rng.random() < 0.03, rng.random() < 0.15))
    return users


def assign_channels(rng, users):
    """Each user chats in one or two channels whose audience matches their language."""
    members = {c[0]: [] for c in CHANNELS}
    for u in users:
        weights = {c[0]: c[2].get(u.lang, 0) * c[3] for c in CHANNELS}
        first = weighted(rng, weights)
        chosen = [first]
        if rng.random() < 0.25:
            second = weighted(rng, weights)
            if second != first:
                chosen.append(second)
        for ch in chosen:
            r = rng.random()
            months = rng.choice([1, 2, 3, 5, 8, 12, 14, 26, 40])
            role = {
                "sub_months": months if r < 0.45 else 0,
                "founder": r < 0.02,
                "mod": False,
                "vip": False,
                "bits_badge": rng.choice([0, 0, 0, 100, 1000, 5000]),
                "first_msg": False,
            }
            u.channels[ch] = role
            members[ch].append(u)
    # A few moderators and VIPs per channel, and some brand-new chatters (first-msg=1).
    for ch, us in members.items():
        rng.shuffle(us)
        for u in us[:3]:
            u.channels[ch]["mod"] = True
        for u in us[3:5]:
            u.channels[ch]["vip"] = True
        for u in us[5:7]:
            u.channels[ch]["first_msg"] = True
            u.channels[ch]["sub_months"] = 0
    return members


def broadcaster(name, room_id):
    u = User(name, name.capitalize() if "_" not in name else name, room_id, "en", "#9146FF", False, False)
    u.channels[name] = {"sub_months": 0, "founder": False, "mod": False, "vip": False,
                        "bits_badge": 0, "first_msg": False, "broadcaster": True}
    return u


SUB_BADGE_TIERS = [0, 3, 6, 12, 24, 36]


def badges_for(u, ch):
    role = u.channels[ch]
    badges, info = [], ""
    if role.get("broadcaster"):
        badges.append("broadcaster/1")
    if role["mod"]:
        badges.append("moderator/1")
    if role["vip"]:
        badges.append("vip/1")
    if role["founder"] and role["sub_months"]:
        info = f"founder/{role['sub_months']}"
        badges.append("founder/0")
    elif role["sub_months"]:
        info = f"subscriber/{role['sub_months']}"
        # The badge version is the highest tier badge the months have reached.
        tier = max(t for t in SUB_BADGE_TIERS if t <= role["sub_months"])
        badges.append(f"subscriber/{tier}")
    if role["bits_badge"]:
        badges.append(f"bits/{role['bits_badge']}")
    if u.prime:
        badges.append("premium/1")
    elif u.turbo:
        badges.append("turbo/1")
    return info, ",".join(badges[:3])


def render(rng, template, users_in_channel):
    """Expands a template into (text, emotes) with emotes = {id: [(start, end), ...]}."""
    words = []
    for tok in template.split(" "):
        if tok.startswith("{e:") and tok.endswith("}"):
            words.append(("emote", tok[3:-1]))
        elif tok.startswith("{t:") and tok.endswith("}"):
            words.append(("text", tok[3:-1]))
        elif tok == "{u}":
            words.append(("text", "@" + rng.choice(users_in_channel).display))
        elif tok == "{n}":
            words.append(("text", str(rng.randint(2, 60))))
        else:
            words.append(("text", tok))
    return words


def decorate(rng, words, lang):
    """Chat noise: trailing emotes, emoji, third-party emotes, shouting, stretching."""
    r = rng.random()
    if r < 0.18:
        name = rng.choice(list(EMOTES))
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            words.append(("emote", name))
    elif r < 0.26:
        words.append(("text", rng.choice(EMOJI)))
    elif r < 0.30:
        # Emoji first, so every emote position after it differs between bytes and chars.
        words.insert(0, ("text", rng.choice(EMOJI)))
        words.append(("emote", rng.choice(list(EMOTES))))
    elif r < 0.34 and lang == "en":
        words.append(("text", rng.choice(THIRD_PARTY)))
    if rng.random() < 0.05 and lang not in ("ja", "ko"):
        words = [(k, w.upper() if k == "text" and not w.startswith("@") else w) for k, w in words]
    return words


def assemble(words):
    text, emotes, pos = [], {}, 0
    for i, (kind, w) in enumerate(words):
        if i:
            text.append(" ")
            pos += 1
        if kind == "emote":
            emotes.setdefault(EMOTES[w], []).append((pos, pos + len(w) - 1))
        text.append(w)
        pos += len(w)  # len() of a Python str counts code points, as Twitch does
    return "".join(text), emotes


def emotes_tag(emotes):
    # Groups in order of first occurrence: "25:0-4,12-16/88:6-13".
    groups = sorted(emotes.items(), key=lambda kv: kv[1][0][0])
    return "/".join(eid + ":" + ",".join(f"{s}-{e}" for s, e in spans) for eid, spans in groups)


def make_id(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def format_line(rng, u, ch, room_id, ts, text, emotes, first_msg, bits):
    role = u.channels[ch]
    info, badges = badges_for(u, ch)
    tags = [("badge-info", info), ("badges", badges)]
    if bits:
        tags.append(("bits", str(bits)))
    if rng.random() < 0.6:
        tags.append(("client-nonce", "%032x" % rng.getrandbits(128)))
    tags += [
        ("color", u.color),
        ("display-name", u.display),
        ("emotes", emotes_tag(emotes)),
        ("first-msg", "1" if first_msg else "0"),
        ("flags", ""),
        ("id", make_id(rng)),
        ("mod", "1" if role["mod"] else "0"),
        ("returning-chatter", "1" if (not first_msg and rng.random() < 0.02) else "0"),
        ("room-id", room_id),
        ("subscriber", "1" if role["sub_months"] else "0"),
        ("tmi-sent-ts", str(ts)),
        ("turbo", "1" if u.turbo else "0"),
        ("user-id", u.user_id),
        ("user-type", "mod" if role["mod"] else ""),
    ]
    if role["vip"]:
        tags.append(("vip", "1"))
    tag_str = ";".join(f"{k}={v}" for k, v in tags)
    return f"@{tag_str} :{u.login}!{u.login}@{u.login}.tmi.twitch.tv PRIVMSG #{ch} :{text}"


def generate():
    rng = random.Random(SEED)
    users = make_users(rng)
    members = assign_channels(rng, users)
    room = {c[0]: c[1] for c in CHANNELS}
    casters = {c[0]: broadcaster(c[0], c[1]) for c in CHANNELS}

    # Plan: (relative ms, channel, kind) for background and burst messages.
    n_background = TOTAL_LINES - BURST_MESSAGES
    plan = []
    for _ in range(n_background):
        ch = weighted(rng, {c[0]: c[3] for c in CHANNELS})
        plan.append((rng.randrange(0, SPAN_MS), ch, "bg"))
    for _ in range(BURST_MESSAGES):
        # Triangular: the hype peaks in the middle of the 20 s window.
        t = BURST_START_MS + int(rng.triangular(0, BURST_LEN_MS, BURST_LEN_MS / 2))
        plan.append((t, BURST_CHANNEL, "burst"))
    plan.sort(key=lambda p: p[0])

    lines, last_ts, seen = [], 0, set()
    mix = collections.Counter()  # language each line was written in, for the README
    bits_left = 14
    for rel, ch, kind in plan:
        ts = max(START_TS_MS + rel, last_ts + 1)  # strictly increasing across the file
        last_ts = ts
        chatters = members[ch]
        if kind == "bg" and rng.random() < 0.01:
            u = casters[ch]
        else:
            u = rng.choice(chatters)
        lang = u.lang
        if kind == "burst":
            if lang != "en" and lang in BURST_TEXT_OTHER and rng.random() < 0.5:
                template = rng.choice(BURST_TEXT_OTHER[lang])
            else:
                lang = "en"
                template = rng.choice(BURST_TEXT)
        else:
            # Bilingual chatters: some non-English users write English in English channels.
            if lang != "en" and rng.random() < 0.2:
                lang = "en"
            sentiment = weighted(rng, {"pos": 40, "neg": 25, "neu": 35})
            template = rng.choice(TEXT[lang][sentiment])
        key = (u.login, ch)
        first_msg = u.channels[ch]["first_msg"] and key not in seen
        seen.add(key)
        if first_msg and lang == "en":
            template = rng.choice(["hi everyone first time here {e:HeyGuys}", "hello chat",
                                   "just found this stream, hi {e:VoHiYo}"])
        mix[lang] += 1
        words = render(rng, template, chatters)
        if kind == "bg":
            words = decorate(rng, words, lang)
        bits = 0
        if kind == "bg" and bits_left and rng.random() < 0.006:
            bits_left -= 1
            bits = 100
            words.insert(0, ("text", "Cheer100"))
        text, emotes = assemble(words)
        lines.append(format_line(rng, u, ch, room[ch], ts, text, emotes, first_msg, bits))
    assert len(lines) == TOTAL_LINES

    for lineno, how in MALFORMED.items():
        lines[lineno - 1] = malform(lines[lineno - 1], how)
    return lines, mix


def malform(line, how):
    if how == "truncated":
        return line[: line.index(";display-name=") + len(";display-na")]
    if how == "no-command":
        return line.replace(" PRIVMSG #", " #", 1)
    if how == "no-space-after-tags":
        head, rest = line.split(" :", 1)
        return head + ":" + rest
    raise ValueError(how)


# ---------------------------------------------------------------------------------------
# Self-check: re-parse what was written, so a generator change cannot silently produce
# wrong emote positions, duplicate ids or out-of-order timestamps.

def parse(line):
    if not line.startswith("@") or " " not in line:
        return None
    tags_str, rest = line[1:].split(" ", 1)
    if not rest.startswith(":") or " PRIVMSG #" not in rest:
        return None
    prefix, rest = rest[1:].split(" ", 1)
    _, rest = rest.split(" ", 1)
    channel, text = rest.split(" :", 1)
    tags = dict(kv.split("=", 1) for kv in tags_str.split(";"))
    return tags, prefix, channel[1:], text


def verify(lines):
    ids, ts_prev, bad, by_room, users, burst = set(), 0, [], {}, {}, 0
    burst_lo, burst_hi = START_TS_MS + BURST_START_MS, START_TS_MS + BURST_START_MS + BURST_LEN_MS
    names = {v: k for k, v in EMOTES.items()}
    for i, line in enumerate(lines, 1):
        assert "\n" not in line and "\r" not in line
        p = parse(line)
        if p is None:
            bad.append(i)
            continue
        tags, prefix, channel, text = p
        assert tags["id"] not in ids, f"line {i}: duplicate id"
        ids.add(tags["id"])
        ts = int(tags["tmi-sent-ts"])
        assert ts > ts_prev, f"line {i}: timestamp not increasing"
        ts_prev = ts
        by_room.setdefault(channel, set()).add(tags["room-id"])
        login = prefix.split("!", 1)[0]
        assert users.setdefault(login, tags["user-id"]) == tags["user-id"], f"line {i}: user-id changed"
        display = tags["display-name"]
        assert display.lower() == login or not display.isascii(), f"line {i}: display-name {display}"
        if channel == BURST_CHANNEL and burst_lo <= ts < burst_hi:
            burst += 1
        if tags["emotes"]:
            for group in tags["emotes"].split("/"):
                eid, spans = group.split(":")
                for span in spans.split(","):
                    s, e = map(int, span.split("-"))
                    assert text[s : e + 1] == names[eid], f"line {i}: emote {eid} at {s}-{e}"
    assert bad == sorted(MALFORMED), f"malformed lines at {bad}, expected {sorted(MALFORMED)}"
    assert all(len(r) == 1 for r in by_room.values()) and len(by_room) == len(CHANNELS)
    assert len({next(iter(r)) for r in by_room.values()}) == len(CHANNELS), "room-ids must differ"
    assert ts_prev - START_TS_MS <= SPAN_MS + 1000
    return {"lines": len(lines), "users": len(users), "burst_in_window": burst}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("-o", "--output", default=os.path.join(root, "data", "demo-chat.log"))
    args = ap.parse_args()
    lines, mix = generate()
    stats = verify(lines)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if len(data) > MAX_BYTES:
        sys.exit(f"log would be {len(data)} bytes, over the {MAX_BYTES} limit")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "wb") as f:
        f.write(data)
    print(f"wrote {args.output}: {stats['lines']} lines, {len(data)} bytes, "
          f"{stats['users']} senders, {stats['burst_in_window']} messages in the "
          f"#{BURST_CHANNEL} burst window; malformed lines {sorted(MALFORMED)}")
    print("languages written: " + ", ".join(f"{k} {v}" for k, v in mix.most_common()))


if __name__ == "__main__":
    main()
