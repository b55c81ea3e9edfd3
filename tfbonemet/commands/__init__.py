"""click commands, one module per workflow stage; registered in tfbonemet.cli."""
