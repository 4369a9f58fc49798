"""Example sagas: the seed's rebase scenario and a three-task order saga."""

from .order import OrderPlaced as OrderPlaced
from .order import order_saga as order_saga
from .rebase import RebaseFailed as RebaseFailed
from .rebase import rebase_saga as rebase_saga

__all__ = ["OrderPlaced", "RebaseFailed", "order_saga", "rebase_saga"]
