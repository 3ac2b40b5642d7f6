"""Dispatch: from the queue to a provider, paced, retried, failed over."""

from smsgw.dispatch.dispatcher import Dispatcher, DispatchStats
from smsgw.dispatch.router import Route, Router

__all__ = ["DispatchStats", "Dispatcher", "Route", "Router"]
