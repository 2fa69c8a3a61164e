"""placeholder"""
from __future__ import annotations
import argparse
def add_arguments(p: argparse.ArgumentParser) -> None: ...
def main(a: argparse.Namespace) -> int: return 0
