"""Which words a sweep injects and which it subtracts: `[sweep] concepts` (a list, or the name
of a built-in set), `concepts_file`, `baseline_words` and `baseline_file`.

Every form is expanded here, at load time, into the word lists `SweepConfig` holds, so the
hash sees the words and never the file they came from: moving a word file keeps its run,
editing it changes the run's words (adding concepts adds trials, as a longer list would).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_table import Table
from introspectd.protocol.prompts import baseline_words

if TYPE_CHECKING:
    from introspectd.protocol.sweep import SweepConfig

SEED_CONCEPTS = ("celebration", "ocean", "fear", "silence")
# Our own set in the spirit of the paper's: 25 concrete nouns (objects, animals, weather,
# places) and 25 abstract ones (emotions, virtues, states), none of them a baseline word.
LINDSEY50 = (
    "volcano", "lighthouse", "spider", "violin", "diamond",
    "thunder", "candle", "glacier", "tornado", "honey",
    "dragon", "telescope", "avalanche", "cathedral", "butterfly",
    "skeleton", "compass", "lemon", "anchor", "feather",
    "rainbow", "cactus", "satellite", "chocolate", "whale",
    "betrayal", "nostalgia", "gratitude", "jealousy", "courage",
    "loneliness", "curiosity", "grief", "triumph", "anxiety",
    "wisdom", "mercy", "chaos", "harmony", "secrecy",
    "revenge", "innocence", "ambition", "boredom", "awe",
    "shame", "hope", "infinity", "deception", "serenity",
)  # fmt: skip
CONCEPT_SETS: dict[str, tuple[str, ...]] = {"seed": SEED_CONCEPTS, "lindsey50": LINDSEY50}
MAX_FILE_WORDS = 10_000  # a word file longer than this is a wrong file, not a word list
MAX_FILE_BYTES = 1 << 20


def read_concepts(t: Table, base_dir: Path) -> tuple[tuple[str, ...], str]:
    """`concepts` (a list or a set name) or `concepts_file`, never both: the checked words,
    and the file they came from ("" for none)."""
    file = t.read("concepts_file")
    if file and "concepts" in t.data:
        t.fail("concepts_file", "give concepts or concepts_file, not both")
    if file:
        words = read_word_file(t, "concepts_file", file, base_dir)
    else:
        value = t.take(
            "concepts",
            list(SEED_CONCEPTS),
            (list, str),
            f"a list of words or a set name ({', '.join(CONCEPT_SETS)})",
        )
        if isinstance(value, str) and value not in CONCEPT_SETS:
            t.fail(
                "concepts", f"unknown concept set {value!r}; the sets: {', '.join(CONCEPT_SETS)}"
            )
        words = list(CONCEPT_SETS[value]) if isinstance(value, str) else value
    key = "concepts_file" if file else "concepts"
    if not words:
        t.fail(key, "must name at least one concept")
    check_words(t, key, words, "concept")
    return tuple(words), file


def read_baseline(
    t: Table, base_dir: Path, concepts: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    """`baseline_words` or `baseline_file` (no words: the built-in list, protocol/prompts.py),
    and the file they came from."""
    file = t.read("baseline_file")
    if file and "baseline_words" in t.data:
        t.fail("baseline_file", "give baseline_words or baseline_file, not both")
    key = "baseline_file" if file else "baseline_words"
    words = read_word_file(t, key, file, base_dir) if file else t.array("baseline_words", [])
    if file and not words:  # an empty list is the default; an empty file, a mistake
        t.fail(key, f"{file} holds no words")
    check_words(t, key, words, "baseline word")
    # A concept in its own baseline would subtract part of itself: a mistake, never a choice.
    clash = [w for w in words if w in concepts]
    if clash:
        t.fail(key, f"{clash[0]!r} is also a concept; its vector would subtract itself")
    return tuple(words), file


def check_words(t: Table, key: str, words: list[Any], what: str) -> None:
    for word in words:
        if not isinstance(word, str):
            t.fail(key, f"each {what} must be a lowercase word, got {word!r}")
        problem = rules.name_problem(word, rules.CONCEPT_RE, "a lowercase word")
        if problem is not None:
            t.fail(key, problem)
    t.refuse_duplicates(key, words, what)


def read_word_file(t: Table, key: str, name: str, base_dir: Path) -> list[str]:
    """One word a line; blank lines and lines starting with `#` are skipped. A relative path
    is taken from the plan's directory, as [judge] fewshot is."""
    path = resolve(name, base_dir)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            t.fail(key, f"{path} is over {MAX_FILE_BYTES >> 20} MiB: not a word list")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        t.fail(key, f"{path}: file not found")
    except (OSError, UnicodeDecodeError) as exc:
        t.fail(key, f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})")
    lines = [line.strip() for line in text.splitlines()]
    words = [line for line in lines if line and not line.startswith("#")]
    if len(words) > MAX_FILE_WORDS:
        t.fail(key, f"{path} holds {len(words)} words, more than {MAX_FILE_WORDS}")
    return words


def resolve(name: str, base_dir: Path) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base_dir / path


def plan_dir(path: Path | str) -> Path:
    """Where a plan's relative file names start: its directory; the working directory for a
    gs:// plan (its neighbours are not on this machine)."""
    text = str(path)
    return Path.cwd() if text.startswith("gs://") else Path(text).parent


def read_path(t: Table, key: str, base_dir: Path) -> str:
    """A file key, resolved from the plan's directory and made absolute, so the run finds
    the file whichever directory a later command starts in."""
    name = t.read(key)
    return str(resolve(name, base_dir).resolve()) if name else ""


def run_baseline(sweep: SweepConfig) -> list[str]:
    """The words a new run subtracts: the plan's own, else the built-in list without the
    sweep's concepts."""
    return list(sweep.baseline_words) or baseline_words(sweep.concepts)


def strip_sources(sweep: dict[str, Any]) -> None:
    """Drop from a run spec what does not decide generations or holds its default, so runs
    made before these keys keep their hash: the vectors file's path (its content's hash is
    added by run/session.py), the word files (their words are in it) and an empty baseline
    list (the built-in one)."""
    for key in ("vectors_file", "concepts_file", "baseline_file"):
        sweep.pop(key, None)
    if not sweep.get("baseline_words"):
        sweep.pop("baseline_words", None)
