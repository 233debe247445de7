"""Command-line tools for machines without ROS 2: priorocc_play, priorocc_record, priorocc_topics."""
