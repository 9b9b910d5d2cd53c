"""Run a sync in a child process that kills itself with SIGKILL mid-sync (for tests).

    python tests/sync_child.py SOURCE DATA_DIR KILL_AFTER_WRITES

After KILL_AFTER_WRITES batch writes to the index, the process SIGKILLs itself from a thread
while the next batch is being written — no cleanup, no finally blocks, like kill -9.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from base.database import make_engine, sqlite_url
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.index.lancedb import LanceIndex
from knowledge.runtime import Knowledge


class KillingIndex(LanceIndex):
    def __init__(self, path: Path, kill_after: int) -> None:
        super().__init__(path)
        self.writes = 0
        self.kill_after = kill_after

    async def replace_documents(self, records):
        self.writes += 1
        if self.writes > self.kill_after:
            # Die a few milliseconds into this write, whatever it is doing then.
            threading.Timer(0.005, os.kill, (os.getpid(), signal.SIGKILL)).start()
        await super().replace_documents(records)


async def main(source: Path, data_dir: Path, kill_after: int) -> None:
    config = KnowledgeConfig(sources=[FolderSource(path=source, name="handbook")])
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    index = KillingIndex(data_dir / "lancedb", kill_after)
    knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine, index=index)
    knowledge.syncer.batch_docs = 2
    await knowledge.open(index=False)
    await knowledge.syncer.run()
    print("finished without being killed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
