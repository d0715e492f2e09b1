"""Adapters behind the ports of ``im.ports``, chosen by URL scheme (see ``build``)."""

from im.adapters.factory import build_backends, build_message_store, build_push_notifier

__all__ = ["build_backends", "build_message_store", "build_push_notifier"]
