"""How a weight matrix (n_out, n_in) is cut into physical tiles.

A tile holds ``tile_rows`` inputs (rows, driven in a forward read) by ``tile_cols`` outputs
(columns, sensed in a forward read); the last tile of each direction takes the remainder.  A
tile is named by its indices ``(row tile, column tile)`` in public interfaces (probes, exports)
and keyed by its first input and first output ``(rt.start, ct.start)`` inside the reader.
"""

from __future__ import annotations

import numpy as np


def blocks(n: int, size: int) -> list:
    """Slices of ``size`` (the last one shorter) covering range(n)."""
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


class Tiling:
    """The tiles of one (n_out, n_in) matrix."""

    def __init__(self, n_out: int, n_in: int, tile_rows: int, tile_cols: int):
        self.n_out, self.n_in = n_out, n_in
        self.tile_rows, self.tile_cols = int(tile_rows), int(tile_cols)
        self.row_tiles = blocks(n_in, tile_rows)      # slices of inputs
        self.col_tiles = blocks(n_out, tile_cols)     # slices of outputs
        # sensed-line bounds per read direction: columns forward, rows transposed
        self.bounds = {t: np.array([s.start for s in tiles] + [tiles[-1].stop], np.int64)
                       for t, tiles in ((False, self.col_tiles), (True, self.row_tiles))}

    def keys(self) -> list:
        """Every tile's key ``(first input, first output)``, row tiles outer."""
        return [(rt.start, ct.start) for rt in self.row_tiles for ct in self.col_tiles]

    def key(self, tile: tuple) -> tuple:
        """The key of tile ``(row tile index, column tile index)``."""
        ri, ci = tile
        if not (0 <= ri < len(self.row_tiles) and 0 <= ci < len(self.col_tiles)):
            raise IndexError(f"tile {tile} out of range: {len(self.row_tiles)} x "
                             f"{len(self.col_tiles)} tiles")
        return self.row_tiles[ri].start, self.col_tiles[ci].start

    def driven_sensed(self, transposed: bool) -> tuple:
        """(driven tile slices, sensed tile slices) of a read direction."""
        return ((self.col_tiles, self.row_tiles) if transposed else
                (self.row_tiles, self.col_tiles))
