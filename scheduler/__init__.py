"""Topological orders of compute graphs that minimize peak memory.

Never imports torch. Entry points: :func:`scheduler.strategies.schedule`,
:func:`scheduler.memory.simulate`.
"""
