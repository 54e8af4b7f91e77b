"""The run store's schema: the SQL that makes `runs.sqlite`, one migration per version.

`MIGRATIONS[v]` brings a version-`v` file to version `v + 1`; `RunStore` applies the missing
ones when it opens a file (`PRAGMA user_version` holds the version). A new column is one more
entry here, never an edit of an old one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        name TEXT,
        created REAL NOT NULL,
        group_id TEXT NOT NULL,
        request_id TEXT,
        slot INTEGER NOT NULL DEFAULT 0,
        seed INTEGER NOT NULL DEFAULT 0,
        recipe TEXT,
        workspace TEXT NOT NULL DEFAULT '',
        data_path TEXT NOT NULL,
        data_hash TEXT,
        classes TEXT,
        backbone TEXT NOT NULL,
        strategy TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        epoch INTEGER NOT NULL DEFAULT 0,
        epochs_total INTEGER NOT NULL DEFAULT 0,
        batch INTEGER NOT NULL DEFAULT 0,
        batches INTEGER NOT NULL DEFAULT 0,
        running_loss REAL,
        running_acc REAL,
        phase TEXT,
        heartbeat REAL,
        started REAL,
        finished REAL,
        error TEXT,
        best_val_acc REAL,
        final_val_acc REAL,
        train_seconds REAL,
        trainable_params INTEGER,
        total_params INTEGER,
        num_train INTEGER,
        num_val INTEGER,
        num_classes INTEGER,
        device TEXT,
        versions TEXT,
        worker_pid INTEGER,
        UNIQUE (request_id, slot)
    );
    CREATE INDEX runs_status ON runs (status, created);
    CREATE INDEX runs_group ON runs (group_id);
    CREATE TABLE epochs (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        train_loss REAL,
        train_acc REAL,
        val_loss REAL,
        val_acc REAL,
        seconds REAL,
        lr REAL,
        PRIMARY KEY (run_id, epoch)
    );
    """,
    # version 2: a group may wait for another (a recipe's later stage for the one before)
    "ALTER TABLE runs ADD COLUMN depends_on TEXT",
    "ALTER TABLE runs ADD COLUMN executor TEXT; ALTER TABLE runs ADD COLUMN node TEXT; ALTER TABLE runs ADD COLUMN world_size INTEGER",  # 3: where it trained (executor, node, DDP processes)
    # version 4: the machine of the process in worker_pid, to tell when that process is gone
    "ALTER TABLE runs ADD COLUMN owner_host TEXT",
]
SCHEMA_VERSION = len(MIGRATIONS)
JSON_FIELDS = ("classes", "config", "versions")
