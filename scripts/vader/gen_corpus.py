#!/usr/bin/env python3
"""Generate the VADER parity corpus: plugins/sentiment/tests/corpus.txt.

One input per line (split on "\\n" only: a few lines deliberately contain other Unicode
line/record separators, which must stay inside their line). The output is deterministic:
a fixed seed, Python's `random.Random` (stable across Python 3 versions) and no
dependence on dict or set ordering.

The corpus mixes hand-written probes for each VADER rule (including the quirks of the
3.3.2 release) with template-generated and randomly combined text, and a large share of
Twitch-chat-looking lines. It contains no Twitch emote names: those are the plugin's
extension, not VADER, and lines that would contain one are filtered out.

Usage: python3 scripts/vader/gen_corpus.py   (then run gen_vectors.py)
"""

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEXICON = ROOT / "plugins" / "sentiment" / "data" / "vader_lexicon.txt"
OUT = ROOT / "plugins" / "sentiment" / "tests" / "corpus.txt"

rng = random.Random(3_3_2)

# Emote names (Twitch globals and common third-party ones) that must not appear as tokens.
EMOTE_NAMES = set(
    """Kappa PogChamp LUL BibleThump NotLikeThis ResidentSleeper Kreygasm 4Head DansGame
    SwiftRage TriHard WutFace SeemsGood CoolStoryBob HeyGuys VoHiYo FailFish BabyRage SMOrc
    PJSalt Jebaited CoolCat KappaPride MingLee cmonBruh PogU Pog POGGERS PepeHands monkaS
    KEKW OMEGALUL LULW EZ Clap catJAM Sadge Copium Aware ICANT pepeLaugh 5Head WeirdChamp
    PepeLaugh FeelsBadMan FeelsGoodMan FeelsStrongMan Kapp KappaHD BloodTrail TwitchUnity
    HSWP PogBones GivePLZ TakeNRG MrDestructoid BrokeBack KomodoHype PunchTrees StinkyCheese
    Poooound PowerUpL PowerUpR TPFufun NomNom OhMyDog OSFrog PrimeMe RalpherZ duDudu
    """.split()
)

# --- vocabulary ------------------------------------------------------------------------

SUBJECTS = [
    "this stream", "the streamer", "chat", "that play", "this game", "the boss fight",
    "the mods", "the music", "this raid", "this run", "the ending", "that clip",
    "the new patch", "your setup", "this map", "the vod", "the collab", "this chat",
    "the tournament", "the sub goal", "the camera", "the audio", "the team", "this build",
    "the speedrun", "that reaction", "the giveaway", "your voice", "the overlay", "the ping",
]
NOUNS = [
    "stream", "game", "play", "run", "boss", "map", "song", "team", "match", "clip",
    "movie", "idea", "plan", "day", "night", "round", "build", "deck", "patch", "joke",
    "chat", "mod", "raid", "vod", "loot", "level", "skin", "meta", "queue", "lobby",
]
POS_ADJ = [
    "good", "great", "amazing", "awesome", "nice", "fun", "funny", "beautiful", "best",
    "cool", "clean", "hilarious", "wonderful", "smart", "perfect", "epic", "lovely",
    "happy", "insane", "sick", "excellent", "brilliant", "fantastic", "sweet", "solid",
]
NEG_ADJ = [
    "bad", "awful", "terrible", "boring", "sad", "annoying", "worst", "ugly", "lame",
    "stupid", "horrible", "broken", "disgusting", "painful", "dead", "toxic", "trash",
    "cringe", "pathetic", "weak", "unfair", "rigged", "slow", "laggy", "mediocre",
]
NEUTRAL = [
    "the", "a", "is", "was", "it", "this", "that", "game", "stream", "chat", "today",
    "now", "again", "round", "level", "map", "he", "she", "they", "we", "going", "to",
    "in", "on", "of", "and", "for", "with", "just", "still", "here", "there", "then",
]
VERBS_POS = ["love", "like", "enjoy", "adore", "appreciate", "miss", "want", "respect"]
VERBS_NEG = ["hate", "dislike", "despise", "fear", "regret", "doubt", "blame", "hurt"]
BOOSTERS = [
    "very", "extremely", "really", "so", "totally", "incredibly", "absolutely", "quite",
    "hella", "fucking", "friggin", "most", "more", "deeply", "completely", "utterly",
    "super", "kinda", "sorta", "kind of", "sort of", "slightly", "barely", "hardly",
    "just enough", "somewhat", "less", "little", "almost", "marginally", "kind-of",
    "sort-of", "kindof", "sortof", "occasionally", "fully", "uber", "effing", "flippin",
]
NEGATORS = [
    "not", "no", "never", "without", "isn't", "isnt", "dont", "don't", "can't", "cant",
    "wasn't", "wasnt", "aint", "ain't", "nothing", "rarely", "seldom", "despite", "uh-uh",
    "uhuh", "nor", "cannot", "won't", "wont", "didnt", "didn't", "shouldn't've", "wouldnt",
    "neither", "none", "nope", "nowhere", "hasn't", "haven't", "doesnt", "aren't", "mustn't",
]
PUNCT = [
    "", "", "", ".", "!", "!!", "!!!", "!!!!!", "?", "??", "???", "????", "?!", "!?",
    "?!?!", "...", " !", " ?", " !!!", "!!!???", ",", " :)", " :(", " lol", " xD",
]
EMOJI = [
    "😀", "😭", "❤️", "❤", "🔥", "😂", "🤣", "💀", "🙏", "👍", "👎", "😡", "😍", "🥺", "😢",
    "😎", "🤔", "🙄", "😱", "🎉", "💯", "✨", "😴", "🤮", "💔", "🥰", "😤", "😬", "🤡",
    "👏", "🙌", "😊", "☺", "♥", "💘", "💋", "😁", "🆙", "🔛", "🆗", "👍🏽", "👋🏻",
    "👨‍👩‍👧", "🏳️‍🌈", "🇺🇸", "1️⃣", "🤷‍♂️", "😅", "😈", "👀", "🐐", "🧢", "🫡", "🫠",
    "☹️", "😐", "😑", "🙂", "🙃", "😳", "🥲", "🤯", "🤬", "⚡", "⭐", "🏆", "💩",
]
CHAT_SLANG = [
    "lol", "lmao", "lmfao", "rofl", "gg", "ggwp", "gg wp", "ez", "rip", "W", "L", "F",
    "based", "ratio", "no shot", "sheesh", "bruh", "yikes", "oof", "holy", "lets go",
    "LETS GOOOO", "lets goooo", "no way", "hype", "clutch", "throwing", "washed", "goated",
    "cracked", "diff", "skill issue", "touch grass", "fr fr", "ong", "deadass", "ngl",
    "tbh", "imo", "idk", "smh", "wtf", "omg", "omfg", "wow", "yay", "ugh", "meh", "sigh",
    "haha", "hahaha", "xd", "xD", "XD", "kek", "pepega", "sadge", "widepeepo", "poggers",
]
USERS = ["@xX_gamer_Xx", "@mod_sarah", "@streamer", "@chatter42", "@Nightbot", "@a"]
COMMANDS = ["!discord", "!uptime", "!specs", "!followage", "!so", "!lurk", "!rank", "!song"]


def caps_word(words):
    """Upper-cases one random word (the ALL-CAPS differential)."""
    words = list(words)
    if words:
        i = rng.randrange(len(words))
        words[i] = words[i].upper()
    return words


def casing(text):
    r = rng.random()
    if r < 0.12:
        return text.upper()
    if r < 0.30:
        return " ".join(caps_word(text.split(" ")))
    if r < 0.36:
        return text.capitalize()
    return text


def pick(xs):
    return rng.choice(xs)


def read_lexicon():
    entries = {}
    for line in LEXICON.read_text(encoding="utf-8").rstrip("\n").split("\n"):
        if line:
            word, measure = line.strip().split("\t")[0:2]
            entries[word] = float(measure)
    return entries


LEX = read_lexicon()
LEX_WORDS = sorted(LEX)

# --- hand-written probes ------------------------------------------------------------------

HAND = [
    # The reference's own demo sentences.
    "VADER is smart, handsome, and funny.",
    "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.",
    "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.",
    "The book was good.",
    "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today SUX!",
    "Today only kinda sux! But I'll get by, lol",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad at all",
    "Sentiment analysis has never been good.",
    "Sentiment analysis has never been this good!",
    "Most automated sentiment analysis tools are shit.",
    "With VADER, sentiment analysis is the shit!",
    "Other sentiment analysis tools can be quite bad.",
    "On the other hand, VADER is quite bad ass",
    "VADER is such a badass!",
    "Without a doubt, excellent idea.",
    "Roger Dodger is one of the most compelling variations on this theme.",
    "Roger Dodger is at least compelling as a variation on the theme.",
    "Roger Dodger is one of the least compelling variations on this theme.",
    "Not such a badass after all.",
    "Without a doubt, an excellent idea.",
    # Empty and whitespace-only inputs, lone punctuation and one-character tokens.
    "",
    " ",
    "\t",
    "!",
    "?",
    "!!",
    "??",
    "!?",
    "???",
    "!!!!!!!!!!",
    "????????",
    ".",
    "a",
    "I",
    "k",
    "x",
    "W",
    "L",
    "F",
    "l",
    "w",
    ":",
    ")",
    "a b c d e f g",
    "i k x y z good",
    "u r good",
    "u r a l",
    "I I I I",
    "k k k good k",
    "W W W",
    "L L L bad",
    "F F F F F F F F F F F F",
    "? ? ? good",
    "! ! ! bad",
    "good ? ! ? !",
    "a ! b ? c",
    "x d",
    "o o o o",
    "- - - nice - - -",
    # Punctuation emphasis on neutral text (the amplifier only applies to non-zero sums).
    "what time is it???",
    "what time is it????",
    "when is the next stream?",
    "when is the next stream??",
    "is this live?!",
    "wait what!!!",
    "hello!!!!",
    "ok!!!",
    "good!!!!!!",
    "bad??",
    "bad???",
    "bad????",
    "good?!?!?!",
    "the stream!!! starts!!! now!!!",
    "the map is loading...",
    # The "no" rule.
    "no",
    "no good",
    "no no good",
    "no no no",
    "no problem",
    "no problem at all",
    "no bad vibes",
    "no or bad",
    "no stream or great",
    "no stream nor great",
    "NO good stuff here",
    "this is NO fun",
    "no fun",
    "no fun at all",
    "say no to drugs",
    "good no",
    "no, good",
    "NO",
    "No.",
    "no way that was good",
    "no the game is good",
    "there is no hope",
    "no love for the streamer",
    # Negations, one to three words away.
    "not good",
    "not very good",
    "not so very good",
    "not at all good",
    "not the best",
    "isn't good",
    "isnt good",
    "dont like it",
    "don't like it",
    "I don't really like it",
    "it ain't bad",
    "it aint bad at all",
    "never good",
    "never so good",
    "never this good",
    "never been so good",
    "never so very good",
    "never this bad",
    "I have never seen something so good",
    "nothing good here",
    "without doubt good",
    "without a doubt good",
    "without any doubt the best",
    "without doubt, a great stream",
    "without a doubt",
    "without fail",
    "without hope",
    "rarely good",
    "seldom fun",
    "despite the lag it was great",
    "uh-uh not good",
    "shouldn't've been bad",
    "wouldn't've been great",
    "he didn't win",
    "we can't lose",
    "can't stand this",
    "cannot complain",
    "won't lie that was great",
    "neither good nor bad",
    "none of that was fun",
    "nope, not happy",
    # "least".
    "least good",
    "the least good",
    "at least good",
    "at least it was fun",
    "very least fun",
    "the very least fun",
    "least",
    "one of the least fun games",
    "at least",
    # "but".
    "good but bad",
    "bad but good",
    "good good but bad",
    "good but good",
    "good good but good good",
    "love love love but hate",
    "nice but nice but nice",
    "but good",
    "good but",
    "but",
    "BUT good",
    "it was fun but the ending was sad",
    "great stream but the audio is bad but the chat is nice",
    "i like it but i like it",
    "happy happy happy but sad sad sad",
    "good nice good but nice good nice",
    "1 2 3 but good good good",
    # Boosters and dampeners.
    "very good",
    "VERY good",
    "very GOOD",
    "VERY GOOD",
    "very very good",
    "very very very good",
    "extremely bad",
    "EXTREMELY bad stream",
    "kind of good",
    "kind of bad",
    "it was kind of good",
    "the stream was kind of good",
    "sort of good",
    "the game is sort of fun",
    "just enough fun",
    "it was just enough fun",
    "kinda good",
    "KINDA good lol",
    "sorta bad",
    "kind",
    "kind of",
    "so kind",
    "very kind of you",
    "a kind of magic",
    "this is so good",
    "this is so very good",
    "this is so not good",
    "this so good",
    "this game this is good",
    "it is so so good",
    "barely good",
    "hardly bad",
    "slightly annoying",
    "almost perfect",
    "most amazing",
    "more fun",
    "less fun",
    "little fun",
    "incredible",
    "incredible stream",
    "the incredible hulk is great",
    "hella fun",
    "fucking great",
    "fucking hell",
    # Special-case idioms (checked three words back, and ahead).
    "the shit",
    "this is the shit",
    "man this is the shit",
    "a b c the shit",
    "that was the bomb",
    "the bomb",
    "this game is bad ass",
    "so bad ass",
    "badass",
    "yeah right",
    "oh yeah right",
    "a b yeah right",
    "the kiss of death",
    "that is the kiss of death",
    "this food is to die for",
    "a b to die for",
    "her beating heart",
    "oh my beating heart",
    "meet me at the bus stop",
    "the old bus stop",
    "cut the mustard",
    "under the weather",
    "break a leg",
    "on the ball",
    # ALL CAPS.
    "GOOD",
    "GOOD stream",
    "good STREAM",
    "I LOVE THIS",
    "I LOVE this",
    "i LOVE this",
    "THIS IS BAD",
    "this is BAD",
    "WOW",
    "WOW this is great",
    "OMG SO GOOD",
    "OMG so GOOD",
    "123 GOOD",
    "GOOD 123",
    ":) GOOD",
    "HAHA",
    "HAHA nice",
    # Emoticons and lexicon tokens with punctuation.
    ":)",
    ":(",
    ":-)",
    ":-(",
    ":D",
    ":d",
    "xD",
    "XD",
    "<3",
    "</3",
    ":/",
    ":P",
    ":p",
    "=)",
    "(:",
    ":'(",
    ";)",
    "d:",
    "D:",
    "o.O",
    "O_o",
    "good:)",
    "good :)",
    "(good)",
    "'good'",
    "\"good\"",
    "good,",
    "good.",
    "...good...",
    "--good--",
    "!good!",
    "?bad?",
    "go(o)d",
    "g!ood",
    "good.bad",
    "good/bad",
    "can't stand",
    "fed up",
    "screwed up",
    # Emoji specifics: glued descriptions, variation selectors, sequences.
    "😀",
    "😀😀",
    "😀 😀",
    "😀abc",
    "abc😀",
    "abc😀def",
    "❤️",
    "❤️❤️❤️",
    "❤",
    "i ❤️ this stream",
    "🔥🔥🔥",
    "🔥",
    "this is 🔥",
    "😭😭😭",
    "😭",
    "😂",
    "💀💀💀",
    "🔛",
    "🆙",
    "🔛 🆙 good",
    "👍🏽",
    "👨‍👩‍👧",
    "🏳️‍🌈",
    "🇺🇸",
    "1️⃣",
    "🤷‍♂️",
    " 😀",
    "😀 ",
    "\t😀",
    "good😀",
    "not 😀",
    "very 😀",
    "😀 but 😭",
    "no 😀",
    # Unicode oddities: casing, whitespace and separators.
    "İYİ good",
    "\u212aill",
    "\u212aILL it",
    "ǅ good",
    "GOOD ǅ",
    "ΟΔΟΣ good",
    "ПРИВЕТ good",
    "привет GOOD",
    "ＧＯＯＤ",
    "ｇｏｏｄ",
    "good\u00a0stream",
    "good\u3000bad",
    "good\u000bbad",
    "good\u000cbad",
    "good\u001cbad",
    "good\u001fbad",
    "good\u0085bad",
    "good\u2028bad",
    "good\u200bbad",
    "good\u200b bad",
    "\u200b",
    "e\u0301 good",
    "cafe\u0301 is great",
    "好 good",
    "これは good です",
    "مرحبا good",
    "GOOD مرحبا",
    "ß GOOD",
    "SS good",
    "ﬁne",
    "good\u0000bad",
    # Numbers, links, mentions, commands.
    "https://clips.twitch.tv/FunnyClipName good",
    "check out www.example.com it's great",
    "@streamer you are great",
    "@streamer",
    "!discord",
    "!uptime !song",
    "1234567890",
    "10/10 would watch again",
    "0/10",
    "2024 was the best year",
    "$100 donation!!!",
    "#1 streamer",
    "50% good 50% bad",
    "3:)",
    "8)",
    "B)",
]

# --- generators ----------------------------------------------------------------------


def sentence():
    """One short, plausible sentence."""
    t = rng.randrange(14)
    subj, adj_p, adj_n = pick(SUBJECTS), pick(POS_ADJ), pick(NEG_ADJ)
    adj = pick([adj_p, adj_n])
    if t == 0:
        return f"{subj} is {adj}"
    if t == 1:
        return f"{subj} is {pick(BOOSTERS)} {adj}"
    if t == 2:
        return f"{subj} is {pick(NEGATORS)} {adj}"
    if t == 3:
        return f"{subj} is {pick(NEGATORS)} {pick(BOOSTERS)} {adj}"
    if t == 4:
        return f"i {pick(VERBS_POS + VERBS_NEG)} {subj}"
    if t == 5:
        return f"{subj} was {adj_p} but {pick(SUBJECTS)} was {adj_n}"
    if t == 6:
        return f"{pick(BOOSTERS)} {adj} {pick(NOUNS)}"
    if t == 7:
        return f"{pick(CHAT_SLANG)} {subj} is {adj}"
    if t == 8:
        return f"{adj} {pick(NOUNS)} {pick(CHAT_SLANG)}"
    if t == 9:
        return f"{pick(NEGATORS)} {pick(NEUTRAL)} {pick(NEUTRAL)} {adj}"
    if t == 10:
        return f"{subj} {pick(['never', 'without'])} {pick(['so', 'this', 'doubt', 'a', 'been'])} {adj}"
    if t == 11:
        return f"{pick(['at', 'the', 'very', 'a'])} least {adj} {pick(NOUNS)}"
    if t == 12:
        return f"{pick(['no', 'NO', 'not', 'never'])} {adj} {pick(['or', 'nor', 'and', 'but'])} {pick([adj_p, adj_n])}"
    return " ".join(pick(NEUTRAL) for _ in range(rng.randrange(2, 6))) + f" {adj}"


def templated(n):
    out = []
    for _ in range(n):
        text = casing(sentence()) + pick(PUNCT)
        if rng.random() < 0.15:
            text += " " + pick(EMOJI)
        out.append(text)
    return out


def chat_line():
    t = rng.randrange(22)
    if t == 0:
        return pick(CHAT_SLANG)
    if t == 1:
        return f"{pick(CHAT_SLANG)} {pick(CHAT_SLANG)}"
    if t == 2:
        return f"{pick(USERS)} {sentence()}"
    if t == 3:
        return pick(COMMANDS)
    if t == 4:
        word = pick(["so", "lets go", "no", "ya", "wo", "goo", "noo"])
        stretched = word[:-1] + word[-1] * rng.randrange(2, 9)
        return f"{stretched} {pick(POS_ADJ + NEG_ADJ)}"
    if t == 5:
        return " ".join([pick(["gg", "W", "L", "F", "lol", "xd", "rip", "ez", "lmao"])] * rng.randrange(2, 16))
    if t == 6:
        return f"{pick(['first', 'hi chat', 'hello everyone', 'just got here', 'back'])} {pick(PUNCT).strip()}"
    if t == 7:
        return f"can we get a {pick(['hype train', 'F in chat', 'W in chat', 'L in chat', 'raid', 'sub goal'])}{pick(PUNCT)}"
    if t == 8:
        return f"what is this {pick(NOUNS)}{pick(['??', '???', '?', '?!'])}"
    if t == 9:
        return f"{pick(['mods', 'mod', 'chat', 'streamer'])} {pick(['please', 'pls', 'plz'])} {pick(['ban him', 'help', 'fix the audio', 'stop', 'check dms'])}{pick(PUNCT)}"
    if t == 10:
        return f"{pick(EMOJI)}{pick(EMOJI)}{pick(EMOJI)}"
    if t == 11:
        return f"{pick(CHAT_SLANG)} {pick(EMOJI)}"
    if t == 12:
        return f"that {pick(NOUNS)} was {pick(BOOSTERS)} {pick(POS_ADJ + NEG_ADJ)} {pick(EMOJI)}{pick(PUNCT)}"
    if t == 13:
        return f"{pick(POS_ADJ + NEG_ADJ).upper()} {pick(NOUNS)}{pick(PUNCT)}"
    if t == 14:
        return f"{pick(['bro', 'dude', 'man', 'yo', 'chat'])} {pick(['this', 'that', 'he', 'she'])} is {pick(['not', 'so', 'really', 'kinda', 'never'])} {pick(POS_ADJ + NEG_ADJ)}"
    if t == 15:
        return f"{pick(['i', 'we', 'u', 'yall'])} {pick(['dont', 'cant', 'wont', 'didnt', 'really', 'never'])} {pick(VERBS_POS + VERBS_NEG)} {pick(['this', 'him', 'her', 'it', 'that'])}{pick(PUNCT)}"
    if t == 16:
        return f"{rng.randrange(1, 100)} {pick(['subs', 'viewers', 'bits', 'deaths', 'wins'])} {pick(['lets go', 'wow', 'sad', 'gg', 'rip', 'nice'])}{pick(PUNCT)}"
    if t == 17:
        return f"{pick(USERS)} {pick(['thanks for the raid', 'welcome', 'ty for the sub', 'go away', 'you are wrong'])}{pick(PUNCT)}"
    if t == 18:
        return f"{pick(['is', 'was', 'will'])} {pick(['he', 'she', 'it', 'the streamer'])} {pick(['ok', 'good', 'back', 'live', 'dead', 'mad'])}{pick(['?', '??', '???', '????'])}"
    if t == 19:
        return casing(f"{pick(CHAT_SLANG)} {pick(SUBJECTS)} {pick(['is', 'was'])} {pick(POS_ADJ + NEG_ADJ)} {pick(['but', 'and', 'so'])} {pick(SUBJECTS)} {pick(['is', 'was'])} {pick(POS_ADJ + NEG_ADJ)}")
    if t == 20:
        return f"{pick(CHAT_SLANG)}{pick(EMOJI)}{pick(CHAT_SLANG)}"
    return f"{pick(['imagine', 'actually', 'literally', 'lowkey', 'highkey'])} {pick(['being', 'thinking', 'saying'])} {pick(['this', 'that'])} is {pick(POS_ADJ + NEG_ADJ)}{pick(PUNCT)}"


def chat(n):
    return [chat_line() for _ in range(n)]


def word_salad(n):
    """Random lexicon entries (emoticons and slang included) mixed with plain words,
    boosters and negators, with random punctuation and casing."""
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randrange(1, 9)):
            r = rng.random()
            if r < 0.45:
                w = pick(LEX_WORDS)
            elif r < 0.65:
                w = pick(NEUTRAL)
            elif r < 0.78:
                w = pick(BOOSTERS)
            elif r < 0.9:
                w = pick(NEGATORS)
            else:
                w = pick(["but", "no", "least", "at", "very", "so", "this", "never", "without", "doubt", "kind", "of", "or", "nor"])
            r = rng.random()
            if r < 0.1:
                w = w.upper()
            elif r < 0.15:
                w = w.capitalize()
            elif r < 0.25:
                w = pick(["", "(", "'", '"', "*"]) + w + pick(["!", "?", ".", ",", "!!", ")", "'", "...", ":"])
            words.append(w)
        out.append(" ".join(words) + pick(PUNCT))
    return out


def long_messages(n):
    """Messages of more than 60 words."""
    out = []
    for _ in range(n):
        parts, count = [], 0
        while count <= 60:
            s = rng.choice([sentence, chat_line])()
            s = casing(s) + pick(PUNCT)
            if rng.random() < 0.2:
                s += " " + pick(EMOJI)
            parts.append(s)
            count += len(s.split())
        out.append(" ".join(parts))
    return out


def zero_sum_probes():
    """Texts whose valences sum to exactly zero while one side has more words: the
    reference then adds punctuation emphasis to `pos`/`neg` but not to `compound`."""
    out = []
    by_value = {}
    for w in LEX_WORDS:
        if w.isalpha() and w.islower():
            by_value.setdefault(LEX[w], []).append(w)
    values = sorted(v for v in by_value if v > 0 and -2 * v in by_value)
    for v in values[:12]:
        a, b = by_value[v][0], by_value[-2 * v][0]
        for p in ["", "!", "!!!", "??", "????", "!?"]:
            out.append(f"{a} {a} {b}{p}")
    for v in sorted(v for v in by_value if v > 0 and -v in by_value)[:10]:
        a, b = by_value[v][0], by_value[-v][0]
        out.append(f"{a} {b}!!!")
        out.append(f"{a} {b} {a} {b}???")
    return out


def emoji_mix(n):
    out = []
    for _ in range(n):
        e = pick(EMOJI)
        w = pick(POS_ADJ + NEG_ADJ + CHAT_SLANG + NEUTRAL)
        t = rng.randrange(6)
        if t == 0:
            out.append(f"{w}{e}")
        elif t == 1:
            out.append(f"{e}{w}")
        elif t == 2:
            out.append(f"{w} {e} {pick(EMOJI)}")
        elif t == 3:
            out.append(f"{e * rng.randrange(1, 5)}")
        elif t == 4:
            out.append(f"{pick(NEGATORS)} {e}")
        else:
            out.append(casing(f"{pick(SUBJECTS)} {e} {w}") + pick(PUNCT))
    return out


def main():
    lines = list(HAND)
    lines += zero_sum_probes()
    lines += templated(700)
    lines += chat(900)
    lines += word_salad(450)
    lines += emoji_mix(200)
    lines += long_messages(90)

    seen, corpus = set(), []
    for line in lines:
        assert "\n" not in line and "\r" not in line, repr(line)
        tokens = {t.strip("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for t in line.split()}
        if tokens & EMOTE_NAMES or line in seen:
            continue
        seen.add(line)
        corpus.append(line)
    OUT.write_text("".join(line + "\n" for line in corpus), encoding="utf-8")
    print(f"wrote {len(corpus)} lines to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
