"""What a run found, for people: the report (tables, matplotlib figures, Plotly figures, the document, fed by one
description of each trade-off plot), the sensitivity verb, selection and export, and the dashboard."""
