"""Unit-of-work transactional core for a task store on Neon serverless PostgreSQL.

Importing taskcore reads no settings and opens no connection; both happen on first use.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

from taskcore import events
from taskcore._default import (
    configure,
    default_database,
    dispose,
    set_default_database,
    use_database,
)
from taskcore.config import Settings, default_sqlite_path, load_settings, settings_for
from taskcore.database import Database
from taskcore.diagnostics import ConnectionReport
from taskcore.errors import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConflictError,
    ConnectionRejectedError,
    DatabaseError,
    DatabaseUnavailableError,
    NotFoundError,
    PoolExhaustedError,
    TaskcoreError,
    TransientError,
    UsageError,
    ValidationError,
)
from taskcore.models import Task, TaskCreate, TaskUpdate
from taskcore.operations import (
    check_connection,
    create_many,
    create_task,
    delete_task,
    get_task,
    get_tasks,
    init_db,
    toggle_complete,
    update_task,
)
from taskcore.repository import TaskRepository
from taskcore.retry import RetryPolicy
from taskcore.unit_of_work import Isolation, Status, UnitOfWork

# A library configures no handlers; this one keeps Python's last-resort handler from printing
# our records to stderr when the application has not configured logging.
logging.getLogger("taskcore").addHandler(logging.NullHandler())

try:
    __version__ = version("taskcore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionRejectedError",
    "ConnectionReport",
    "Database",
    "DatabaseError",
    "DatabaseUnavailableError",
    "Isolation",
    "NotFoundError",
    "PoolExhaustedError",
    "RetryPolicy",
    "Settings",
    "Status",
    "Task",
    "TaskCreate",
    "TaskRepository",
    "TaskUpdate",
    "TaskcoreError",
    "TransientError",
    "UnitOfWork",
    "UsageError",
    "ValidationError",
    "__version__",
    "check_connection",
    "configure",
    "create_many",
    "create_task",
    "default_database",
    "default_sqlite_path",
    "delete_task",
    "dispose",
    "events",
    "get_task",
    "get_tasks",
    "init_db",
    "load_settings",
    "set_default_database",
    "settings_for",
    "toggle_complete",
    "update_task",
    "use_database",
]
