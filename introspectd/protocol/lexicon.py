"""When an answer mentions its concept: a short hand-written word list per concept, and the matcher.

This is the report's judge-free signal (docs/cli.md, "Concept mentions (no judge)"): steering
that reaches the text shows up as the concept's words in the answer, in injected trials more
than in controls.

What counts as a mention of a concept: any entry of its list, found in the answer
case-insensitively as a whole word.

- Whole words: an entry is not found inside another word ("sea" is not in "season",
  "seamless" or "overseas"; "seashell" counts only because the ocean list names it), but it
  is found next to punctuation, a hyphen or an apostrophe ("sea-green", "ocean's").
- Simple inflections: a word also matches with -s or -es ("Oceans", "beaches"), and one ending
  in a consonant + y with -ies ("parties"). Other forms are listed ("loaves", "bled").
- A trailing `*` makes an entry a stem: any word that begins with it ("celebrat*" finds
  celebrate, celebrating, celebration). Stems are lexical, not sentiment: "fear*" finds
  "fearless" too, which is the concept's word in the text, and that is what is measured.
- A phrase ("deep sea") matches with any whitespace or a hyphen between its words.
- A concept missing from `BUILTIN` is looked up by its singular ("volcanoes" → volcano); when
  that is missing too, its own word (and plural) is the list.
- A plan's `[mentions]` list for a concept replaces the built-in one (it does not add to it).

Offsets are Python string indices (code points) into the answer as recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from introspectd.protocol.results import RecordMention

# Letters and digits at both ends; inside also spaces, hyphens and apostrophes; `*` last.
ENTRY_RE = re.compile(r"[^\W_](?:[\w' -]*[^\W_])?\*?")
MAX_ENTRY_CHARS = 64  # longer is a pasted sentence, not a word

SOURCE_PLAN = "plan"
SOURCE_BUILTIN = "built-in"
SOURCE_CONCEPT = "concept word"

# Lists are short on purpose: words that name the concept or its plainest parts, not every
# association (a "water" in a fear answer is noise either way; "calm", "reflect" and "unease"
# are left out because introspective answers use them about themselves).
# A word table reads best packed, one concept to a paragraph.
# fmt: off
BUILTIN: dict[str, tuple[str, ...]] = {
    # The default sweep's concepts (protocol/plan.py).
    "celebration": ("celebrat*", "party", "festiv*", "festival", "birthday", "anniversary",
                    "congratulat*", "confetti", "firework", "balloon", "parade", "carnival",
                    "fiesta", "gala", "feast", "jubila*", "rejoic*", "cheers", "toast"),
    "ocean": ("ocean*", "sea", "seawater", "seashell", "seaside", "seabed", "seafloor",
              "undersea", "wave", "water", "underwater", "saltwater", "tide", "tidal", "marine",
              "maritime", "beach", "shore", "shoreline", "coast*", "surf", "surfing", "reef",
              "coral", "whale", "dolphin", "lagoon", "aquatic", "nautical", "atlantic",
              "pacific"),
    "fear": ("fear*", "afraid", "scare*", "scary", "fright*", "terror", "terrified",
             "terrify*", "horror", "horrified", "dread*", "panic*", "phobia", "anxious",
             "anxiety", "nervous", "petrified", "alarmed", "trembl*", "apprehensi*", "creepy",
             "spooky"),
    "silence": ("silen*", "quiet*", "hush*", "mute", "muted", "muffl*", "soundless*",
                "noiseless*", "stillness", "whisper*", "speechless", "wordless"),
    # Common concept words: the tests' and benches' extra concepts, and words from the
    # paper's lists.
    "anger": ("anger*", "angr*", "rage", "raging", "enraged", "fury", "furious", "wrath",
              "irritat*", "annoy*", "resent*", "hostil*", "outrage*", "livid"),
    "sadness": ("sad", "sadly", "sadder", "saddest", "sadness", "sorrow*", "grief", "griev*",
                "melanchol*", "unhapp*", "despair", "mourn*", "gloom*", "tearful", "cry",
                "crying", "heartbr*"),
    "happiness": ("happy", "happier", "happiest", "happily", "happiness", "joy*", "delight*",
                  "cheerful", "glad", "gladly", "bliss*", "elat*", "smile", "smiling"),
    "joy": ("joy*", "happy", "happiness", "delight*", "cheerful", "glad", "bliss*", "elat*",
            "jubila*"),
    "love": ("love", "loved", "loving", "lover", "beloved", "romance", "romantic",
             "affection*", "adore", "adored", "adoring", "cherish*", "devotion"),
    "peace": ("peace*", "tranquil*", "serene", "serenity", "calm*", "truce", "ceasefire",
              "harmony"),
    "music": ("music*", "melod*", "song", "sing", "singing", "singer", "sang", "sung",
              "rhythm*", "harmon*", "tune", "chord", "guitar", "piano", "violin", "drum",
              "orchestra*", "symphon*", "concert", "lyric*"),
    "bread": ("bread*", "loaf", "loaves", "dough", "toast", "crust*", "yeast", "flour",
              "sourdough", "baguette", "bake", "baked", "baking", "baker", "bakery", "crumb"),
    "silver": ("silver*", "sterling", "tarnish*"),
    "fire": ("fire", "fiery", "flame*", "flaming", "blaz*", "burn*", "ember", "smoke",
             "smoky", "smoking", "inferno", "ignit*", "wildfire", "bonfire", "campfire"),
    "snow": ("snow*", "blizzard", "frost*", "ice", "icy", "icicle", "winter*", "sleet",
             "avalanche"),
    "dust": ("dust*", "dirt", "grime", "debris", "powder*"),
    "lightning": ("lightning", "thunder*", "bolt", "storm*", "spark*", "electric*"),
    "volcano": ("volcan*", "lava", "magma", "erupt*", "crater"),
    "tree": ("tree", "forest*", "woodland", "wood", "wooden", "leaf", "leaves", "branch",
             "trunk", "oak", "maple", "timber", "foliage"),
    "blood": ("blood*", "bleed*", "bled", "vein", "artery", "gore"),
    "sugar": ("sugar*", "sweet*", "candy", "honey", "syrup", "dessert"),
    "milk": ("milk*", "dairy", "cream*", "lactose"),
    "poetry": ("poet*", "poem", "verse", "rhyme", "stanza", "sonnet", "haiku", "lyric*"),
    "betrayal": ("betray*", "treach*", "backstab*", "deceit*", "deceiv*", "decept*",
                 "disloyal*", "traitor", "double-cross*"),
    "secrecy": ("secret", "secretly", "secretive", "secrecy", "hidden", "conceal*",
                "confidential*", "covert"),
    "cavern": ("cavern*", "cave", "grotto", "underground", "stalactite", "stalagmite"),
    "desert": ("desert", "sand", "dune", "arid", "sahara", "cactus", "cacti", "oasis",
               "oases"),
    "treasure": ("treasur*", "jewel*", "gem", "loot", "riches", "gold", "golden"),
    "satellite": ("satellite", "orbit*", "spacecraft"),
    "mirror": ("mirror", "looking glass"),
    "memory": ("memor*", "remember*", "recollect*", "reminisc*", "nostalg*"),
    "algorithm": ("algorithm*", "computation*"),
}
# fmt: on


@dataclass(frozen=True)
class Mention:
    """Where an answer first mentions its concept: `first_char` is None when it never does."""

    first_char: int | None
    text: str = ""  # the answer's own words there ("Oceans"), "" when no mention

    @property
    def found(self) -> bool:
        return self.first_char is not None

    def as_record(self) -> RecordMention:
        """The record's `mention` object (docs/output.md): both null when there is none."""
        return {"first_char": self.first_char, "text": self.text if self.found else None}


NO_MENTION = Mention(None)


def recorded_mention(value: Any, answer: str) -> Mention | None:
    """A record's `mention` object read back, or None when it is absent or does not fit
    `answer` (an edited file, an older writer): the reader then finds the mention itself."""
    if not isinstance(value, Mapping):
        return None
    first, text = value.get("first_char"), value.get("text")
    if first is None and text is None:
        return NO_MENTION
    if not isinstance(first, int) or isinstance(first, bool) or not isinstance(text, str):
        return None
    if not text or not 0 <= first <= len(answer) - len(text):
        return None
    return Mention(first, text) if answer[first : first + len(text)] == text else None


def entry_problem(entry: str) -> str | None:
    """Why `entry` cannot be a lexicon entry, else None (plan_mentions.py says it for a plan)."""
    if len(entry) > MAX_ENTRY_CHARS:
        return f"each word must be at most {MAX_ENTRY_CHARS} characters, got {len(entry)}"
    if not ENTRY_RE.fullmatch(entry):
        return (
            "each word must be letters or digits (inside also spaces, ' and -; a trailing * "
            f"for a stem), got {entry!r}"
        )
    return None


class Lexicon:
    """The mention words of every concept: `BUILTIN`, with a plan's lists replacing its own."""

    def __init__(self, overrides: Mapping[str, Sequence[str]] | None = None) -> None:
        self._overrides = {c: tuple(words) for c, words in (overrides or {}).items()}
        self._patterns: dict[str, re.Pattern[str]] = {}

    def words(self, concept: str) -> tuple[str, ...]:
        return self._lookup(concept)[0]

    def source(self, concept: str) -> str:
        """Where `words(concept)` comes from: SOURCE_PLAN, SOURCE_BUILTIN or SOURCE_CONCEPT."""
        return self._lookup(concept)[1]

    def first_mention(self, answer: str, concept: str) -> Mention:
        """Whether and where `answer` first mentions `concept`."""
        match = self.pattern(concept).search(answer)
        return NO_MENTION if match is None else Mention(match.start(), match.group(0))

    def spans(self, answer: str, concept: str) -> list[tuple[int, int]]:
        """Every mention's [start, end) in `answer`, in order (for highlighting)."""
        return [m.span() for m in self.pattern(concept).finditer(answer)]

    def pattern(self, concept: str) -> re.Pattern[str]:
        """The compiled matcher of `concept` (compiled once per lexicon)."""
        if concept not in self._patterns:
            self._patterns[concept] = compile_entries(self.words(concept))
        return self._patterns[concept]

    def _lookup(self, concept: str) -> tuple[tuple[str, ...], str]:
        if concept in self._overrides:
            return self._overrides[concept], SOURCE_PLAN
        for key in (concept, singular(concept)):
            if key in BUILTIN:
                return BUILTIN[key], SOURCE_BUILTIN
        return (concept,), SOURCE_CONCEPT


def singular(word: str) -> str:
    """A plural's likely singular ("volcanoes" → "volcano", "memories" → "memory"): only used
    to look a concept up in BUILTIN, never to match text ("news" is not "new")."""
    for plural, one in (("ies", "y"), ("oes", "o"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(plural) and len(word) > len(plural) + 1:
            return word[: -len(plural)] + one
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def compile_entries(entries: Sequence[str]) -> re.Pattern[str]:
    """One pattern for a list of entries (see the module docstring for what each matches).
    Longest first, so the matched text is the fullest entry at the first position."""
    alternatives = sorted((_entry_regex(e) for e in entries), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _entry_regex(entry: str) -> str:
    is_stem = entry.endswith("*")
    words = re.split(r"[\s-]+", entry.rstrip("*").strip().lower())
    body = r"[\s-]+".join(re.escape(w) for w in words)
    if is_stem:
        return body + r"\w*"
    last = words[-1]
    if len(last) > 1 and last[-1] == "y" and last[-2] not in "aeiou":
        return body[:-1] + "(?:y|ies)"
    return body + "(?:e?s)?"
