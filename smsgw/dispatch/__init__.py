"""Dispatch: from the queue to a provider, paced, retried, failed over."""

from smsgw.dispatch.dispatcher import Dispatcher
from smsgw.dispatch.router import Route, Router
from smsgw.dispatch.stats import DispatchStats

__all__ = ["DispatchStats", "Dispatcher", "Route", "Router"]
