"""Quality control: similarity metrics, the quality check and the HTML report."""
