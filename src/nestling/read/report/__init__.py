"""`nestling report`: one self-contained report.html (Vega-Lite figures inlined) and a PNG per figure."""
