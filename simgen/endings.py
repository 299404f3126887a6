"""How lines open and end a conversation: the one place simgen reads greetings, goodbyes and closing lines.

Three lexical rules, applied the same way to real and simulated lines:

- `farewell(text)`: the line says goodbye ("bye", "see you", "take care", "have a good night"...).
  People say it once, at the end: in IARD's train split 0.9% of user lines and 1.1% of
  recommender lines that are NOT the last of their side say goodbye, against 59% and 68% of the
  last ones. A goodbye in the middle of a dialogue is therefore a giveaway, and the simulator's
  redraws (generation/simulator.py) draw such a line again.
- `closes(text)`: the line closes the conversation: a goodbye, thanks ("thanks!", "thank you so
  much", "enjoy"), or the answer to thanks ("you're welcome"). 92% of IARD's dialogues end on a user line that closes; the realism check
  reports that share for both sides (realism/adherence.py), and a terminal-intent user line, or
  the assistant's answer to it, that does not close is drawn again.
- `greeting(text)`: the line opens with a greeting ("hi", "hello", "hey", "good evening"...).
  People greet once, in their first line: in IARD's train split 80% of first user lines and 85% of
  first recommender lines open so, against 1 of the 1,526 later user lines and 1 of the 1,574 later
  recommender lines. A greeting after a side's first line is a giveaway as plain as an early
  goodbye; the realism check reports its share for both sides. (Drawing such a line again, as an
  early goodbye is, was measured and left off: README, "Greetings said once".)

The rules are English word lists. What they leave out: other languages (turn redraws off with
`simgen generate --redraws 0` for a scenario in another language) and goodbyes said without any of
these words.
"""

from __future__ import annotations

import re

_FAREWELL = (r"bye+|goodbye|good night|goodnight|nite|see (?:you|ya)|take care|have a (?:good|great|nice|lovely|wonderful)|"
             r"talk (?:to you )?(?:soon|later)|ttyl|cya|farewell")
_FAREWELL_RE = re.compile(rf"\b(?:{_FAREWELL})\b", re.IGNORECASE)
_GREETING_RE = re.compile(r"^\W*(?:hi+|hello+|hey+|hiya|howdy|greetings|good (?:morning|afternoon|evening|day))\b", re.IGNORECASE)
_CLOSING_RE = re.compile(rf"\b(?:{_FAREWELL}|thanks?|thank you|thx|ty|cheers|enjoy|you'?re welcome|you are welcome)\b", re.IGNORECASE)


def farewell(text: str | None) -> bool:
    """Whether a line says goodbye."""
    return bool(_FAREWELL_RE.search(text or ""))


def greeting(text: str | None) -> bool:
    """Whether a line opens with a greeting."""
    return bool(_GREETING_RE.search(text or ""))


def closes(text: str | None) -> bool:
    """Whether a line closes a conversation (a goodbye, or thanks)."""
    return bool(_CLOSING_RE.search(text or ""))
