"""The one typed report (``model``) and everything that presents it: emitters and the plot."""
