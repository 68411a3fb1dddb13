"""Frames in, class ids out: inference engines and the `auto` runtime choice (`engines`), the
export cache, post-processing, image/video readers and writers, and the threaded `effseg predict`
pipeline."""
