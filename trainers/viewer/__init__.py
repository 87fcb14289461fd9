"""`gymwire view PATH`: a local web page over training runs, eval outputs and episode JSONL files.

`index` finds the runs under the given paths and indexes their files once (a small summary per
episode and the byte offset of its line), following them as they grow; `server` answers the page's
JSON requests from that index and reads one episode's line only when it is opened.
"""
