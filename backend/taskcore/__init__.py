"""Unit-of-work transactional core for a task store on Neon serverless PostgreSQL.

Importing taskcore reads no settings and opens no connection; both happen on first use.
"""

from taskcore import events
from taskcore.config import Settings, default_sqlite_path, load_settings
from taskcore.diagnostics import ConnectionReport, check_connection
from taskcore.engine import configure, dispose
from taskcore.errors import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConflictError,
    ConnectionRejectedError,
    DatabaseError,
    DatabaseUnavailableError,
    NotFoundError,
    TaskcoreError,
    TransientError,
    UsageError,
    ValidationError,
)
from taskcore.models import Task, TaskCreate, TaskUpdate
from taskcore.operations import (
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

__all__ = [
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionRejectedError",
    "ConnectionReport",
    "DatabaseError",
    "DatabaseUnavailableError",
    "Isolation",
    "NotFoundError",
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
    "check_connection",
    "configure",
    "create_task",
    "default_sqlite_path",
    "delete_task",
    "dispose",
    "events",
    "get_task",
    "get_tasks",
    "init_db",
    "load_settings",
    "toggle_complete",
    "update_task",
]
