"""The specialists the orchestrator hands off to, one module each: its instructions, its tools
(with their argument models) and the prompts it suggests next. A new specialist (Google,
finance) is a new module here and one entry in `SPECIALISTS`.

May import: `shared.chat.tools` and what a specialist's tools read (`shared.resources`,
`shared.providers`); never the loop, the history or the socket.
"""

from __future__ import annotations

from shared.chat.specialists import recall, tasks
from shared.chat.tools import Specialist

SPECIALISTS: tuple[Specialist, ...] = (recall.SPECIALIST, tasks.SPECIALIST)
