"""Volume backends behind one interface (cumulo.volume.drivers.driver.VolumeDriver)."""
